"""OxfordPets on a miniature copy in the official layout, and `seglab data pets --download` from a local server."""

from __future__ import annotations

import hashlib

import pytest
import torch

from data_fixtures import PETS_TEST, PETS_TRAINVAL, make_pets_archives, make_pets_tree, serve_files
from seglab.cli import main
from seglab.data import OxfordPets, pets
from seglab.errors import ConfigError, DataError


@pytest.fixture
def pets_root(tmp_path):
    return make_pets_tree(tmp_path / "pets")


def test_items_are_rgb_with_shifted_trimap_classes(pets_root):
    dataset = OxfordPets(pets_root, "test", size=32)
    assert dataset.class_names == ("pet", "background", "border") and dataset.num_classes == 3
    assert sorted(dataset.names) == sorted(PETS_TEST)
    parts = [
        OxfordPets(pets_root, split, split_scheme="random_80_20", size=(24, 20), val_fraction=0.0)
        for split in ("train", "test")
    ]
    assert sum(len(part) for part in parts) == len(PETS_TRAINVAL + PETS_TEST)
    for image, mask in (part[i] for part in parts for i in range(len(part))):  # CMYK, greyscale, RGBA-PNG too
        assert image.shape == (3, 24, 20) and image.dtype == torch.float32
        assert mask.shape == (24, 20) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) == {0, 1, 2}
        assert int(mask[12, 10]) == 0 and int(mask[0, 0]) == 1  # pet in the centre, background in the corner
    full = OxfordPets(pets_root, "test", size=None)
    assert full[0][0].shape[1:] != (32, 32)


def test_official_splits(pets_root):
    train, val, test = (OxfordPets(pets_root, s).names for s in ("train", "val", "test"))
    assert len(val) == round(len(PETS_TRAINVAL) * 0.1) == 1
    assert sorted(train + val) == sorted(PETS_TRAINVAL) and sorted(test) == sorted(PETS_TEST)
    assert OxfordPets(pets_root, "val", seed=0).names == val  # reproducible
    assert {tuple(OxfordPets(pets_root, "val", seed=s).names) for s in range(8)} != {tuple(val)}  # seeded


def test_random_80_20_split_skips_macos_files(pets_root):
    names = {s: OxfordPets(pets_root, s, split_scheme="random_80_20").names for s in ("train", "val", "test")}
    everything = sorted(PETS_TRAINVAL + PETS_TEST)
    assert sorted(names["train"] + names["val"] + names["test"]) == everything  # no "._" files, no overlaps
    assert len(names["test"]) == int(len(everything) * 0.2)
    again = OxfordPets(pets_root, "test", split_scheme="random_80_20").names
    assert again == names["test"]
    other = OxfordPets(pets_root, "test", split_scheme="random_80_20", seed=1).names
    assert other != names["test"]
    with pytest.raises(ConfigError, match="split scheme"):
        OxfordPets(pets_root, "test", split_scheme="90_10")


def test_damaged_trimap_names_the_file(pets_root):
    (pets_root / "annotations" / "trimaps" / f"{PETS_TEST[0]}.png").write_bytes(b"")
    dataset = OxfordPets(pets_root, "test")
    index = dataset.names.index(PETS_TEST[0])
    with pytest.raises(DataError, match=f"{PETS_TEST[0]}.png: the file is empty"):
        dataset[index]
    with pytest.raises(DataError, match="split list missing"):
        OxfordPets(pets_root / "nowhere", "train")


def _checksums(archives):
    return tuple((name, hashlib.md5(data).hexdigest()) for name, data in archives.items())


def test_cli_downloads_resumes_and_is_idempotent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGLAB_ALLOW_HTTP", "1")  # the local test server speaks plain http
    archives = make_pets_archives(tmp_path / "build")
    monkeypatch.setattr(pets, "PETS_ARCHIVES", _checksums(archives))
    root = tmp_path / "data"
    cut = len(archives["images.tar.gz"]) // 3
    with serve_files(archives, cut_after={"images.tar.gz": cut}) as server:
        args = ["data", "pets", "--root", str(root), "--download", "--base-url", server.url, "--no-progress"]
        assert main(args) == 2  # the interrupted transfer is an error that says how to resume
        assert "broke off" in capsys.readouterr().err
        assert (root / "images.tar.gz.part").stat().st_size == cut
        assert main(args) == 0
        assert ("/images.tar.gz", f"bytes={cut}-") in server.requests
        out = capsys.readouterr().out
        assert f"official: train {len(PETS_TRAINVAL) - 1}, val 1, test {len(PETS_TEST)}" in out
        requests = len(server.requests)
        assert main(args) == 0  # already there: nothing downloaded again
        assert len(server.requests) == requests
    assert len(OxfordPets(root, "test")) == len(PETS_TEST)
    assert not list(root.glob("*.part"))


def test_mirror_from_environment_and_checksum_mismatch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGLAB_ALLOW_HTTP", "1")  # the local test server speaks plain http
    archives = make_pets_archives(tmp_path / "build")
    with serve_files(archives) as server:
        monkeypatch.setenv("SEGLAB_PETS_URL", server.url.rstrip("/"))
        # The official md5s do not match the miniature archives: refused, nothing extracted or kept.
        assert main(["data", "pets", "--root", str(tmp_path / "bad"), "--download", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "fails its checksum" in err and "5c4f3ee8e5d25df40f4fd59a7f44e54c" in err
        assert not (tmp_path / "bad" / "images").exists() and not list((tmp_path / "bad").glob("*.tar.gz*"))
        monkeypatch.setattr(pets, "PETS_ARCHIVES", _checksums(archives))
        assert main(["data", "pets", "--root", str(tmp_path / "good"), "--download", "--no-progress"]) == 0
        assert server.url in capsys.readouterr().out
    assert (tmp_path / "good" / "annotations" / "trimaps").is_dir()
