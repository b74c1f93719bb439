"""Nothing seglab is handed runs code or writes outside its folder: checkpoints that carry pickled code through
every route that reads one, YAML configs with Python tags, crafted tar and zip archives, and downloads that fail
their checksum.

Each payload runs a real shell command that creates a marker file; `test_the_payloads_really_run_a_command`
shows that they do when loaded unsafely, so a missing marker elsewhere means seglab refused them.

A checkpoint's saved options are data, never instructions: loading one fetches and reads nothing it names.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import shlex
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import seglab
from data_fixtures import make_pets_archives, serve_files
from seglab.cli import main
from seglab.data import pets
from seglab.download import ALLOW_HTTP_VARIABLE, extract_archive
from seglab.errors import DataError, WeightsError
from seglab.inference.loading import checkpoint_path, read_checkpoint
from seglab.inference.spec import SPEC_KEY

TINY_CONFIG = {
    "name": "run", "dataset": "shapes", "image_size": 32, "train_length": 8, "val_length": 4, "batch_size": 4,
    "model": "deeplabv3plus_xception41", "precision": "32-true", "progress_bar": False, "max_epochs": 1,
    "test_after_training": False,
}


class RunsCommand:
    """Unpickling this runs `touch marker` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def evil_checkpoint(path: Path, marker: Path, *, file_format: str = "torch") -> Path:
    """A checkpoint-shaped file whose loading would run a command, in torch's zip format or its legacy format."""
    payload = {"state_dict": {}, "epoch": 0, "hyper_parameters": RunsCommand(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path, _use_new_zipfile_serialization=file_format == "torch")
    return path


def yaml_running(marker: Path) -> str:
    return f'!!python/object/apply:os.system ["touch {marker}"]'


def test_the_payloads_really_run_a_command(tmp_path):
    for number, file_format in enumerate(("torch", "legacy")):
        marker = tmp_path / f"ran{number}"
        path = evil_checkpoint(tmp_path / f"evil{number}.ckpt", marker, file_format=file_format)
        torch.load(path, weights_only=False)
        assert marker.exists()
    yaml.unsafe_load(f"lr: {yaml_running(tmp_path / 'ran_yaml')}")
    assert (tmp_path / "ran_yaml").exists()


@pytest.fixture(params=["torch", "legacy"])
def evil(request, tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    return evil_checkpoint(tmp_path / "evil.ckpt", marker, file_format=request.param), marker


def _refused(text: str) -> bool:
    # What the refusal must say: which file, that it holds code, and that none of it ran.
    return ("refused, it holds pickled Python objects (posix.system)" in text and "evil.ckpt" in text
            and "nothing in the file was run" in text)


def test_train_resume_refuses_a_checkpoint_that_would_run_a_command(evil, tmp_path, capsys):
    checkpoint, marker = evil
    run = tmp_path / "runs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    os.replace(checkpoint, run / "checkpoints" / "last.ckpt")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "last.ckpt: refused, it holds pickled Python objects (posix.system)" in err, err
    assert not marker.exists()


def test_train_init_from_refuses_a_checkpoint_that_would_run_a_command(evil, tmp_path, capsys):
    checkpoint, marker = evil
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_CONFIG, "runs_dir": str(tmp_path / "runs")}))
    assert main(["train", str(config), "--set", f"init_from={checkpoint}"]) == 2
    assert _refused(capsys.readouterr().err)
    assert not marker.exists()


def test_predict_and_evaluate_refuse_a_checkpoint_that_would_run_a_command(evil, tmp_path, capsys):
    checkpoint, marker = evil
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 2
    assert _refused(capsys.readouterr().err)
    assert main(["evaluate", str(checkpoint), "--out", str(tmp_path / "report")]) == 2
    assert _refused(capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


def test_seglab_load_refuses_a_checkpoint_that_would_run_a_command(evil):
    checkpoint, marker = evil
    with pytest.raises(WeightsError) as info:
        seglab.load(checkpoint)
    assert _refused(str(info.value))
    assert "weights_only=False unless you trust" in str(info.value)  # never the advice to just turn it off
    assert not marker.exists()


@pytest.mark.parametrize("tag", ["apply", "object"])
def test_yaml_configs_with_python_tags_are_refused_and_run_nothing(tag, tmp_path, capsys):
    marker = tmp_path / "marker"
    value = yaml_running(marker) if tag == "apply" else "!!python/object:seglab.training.config.TrainConfig {}"
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: evil\nlr: {value}\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    named_tag = "python/object/apply:os.system" if tag == "apply" else "python/object:seglab"
    assert "evil.yaml" in err and "not valid YAML" in err and named_tag in err, err
    # The same tag in a --set override, and in the config.yaml of a run folder being resumed.
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**TINY_CONFIG, "runs_dir": str(tmp_path / "runs")}))
    assert main(["train", str(good), "--set", f"lr={value}"]) == 2
    assert "--set lr: cannot parse value" in capsys.readouterr().err
    run = tmp_path / "runs" / "tampered"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG) + f"lr: {value}\n")
    assert main(["train", "--resume", str(run)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "runs" / "evil").exists()


# ---- archives: every member is checked before anything is written ----

def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        ok = tarfile.TarInfo("folder/ok.txt")
        ok.size = 2
        bundle.addfile(ok, io.BytesIO(b"ok"))
        for member, data in members:
            member.size = len(data) if member.isfile() else 0
            bundle.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 8, 0
    return info, b"x" if kind == tarfile.REGTYPE else b""


TAR_CASES = {
    "hardlink_absolute": ([_tar_member("folder/passwd", tarfile.LNKTYPE, "/etc/passwd")], "hard link to '/etc/passwd'"),
    "hardlink_dotdot": ([_tar_member("folder/up", tarfile.LNKTYPE, "../../outside.txt")], "hard link"),
    "hardlink_inside": ([_tar_member("folder/same", tarfile.LNKTYPE, "folder/ok.txt")], "hard link"),
    "symlink_dotdot": ([_tar_member("folder/up", tarfile.SYMTYPE, "../..")], "symbolic link to '../..'"),
    # A link to a folder, then a file written "through" it: refused at the link, before the file.
    "symlink_then_write": ([_tar_member("folder/escape", tarfile.SYMTYPE, "/tmp"),
                            _tar_member("folder/escape/seglab-pwned.txt")], "symbolic link"),
    "block_device": ([_tar_member("folder/disk", tarfile.BLKTYPE)], "device"),
    "fifo": ([_tar_member("folder/pipe", tarfile.FIFOTYPE)], "FIFO"),
    "absolute_path": ([_tar_member("/tmp/seglab-absolute.txt")], "absolute path"),
    "dotdot_path": ([_tar_member("folder/../../outside.txt")], "'..'"),
}


@pytest.mark.parametrize("case", TAR_CASES, ids=list(TAR_CASES))
def test_crafted_tar_archives_are_refused_before_anything_is_written(case, tmp_path):
    members, reason = TAR_CASES[case]
    archive = tmp_path / "data" / "evil.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(_tar(*members))
    out = tmp_path / "data" / "out"
    with pytest.raises(DataError, match=reason) as info:
        extract_archive(archive, out)
    assert repr(members[0][0].name) in str(info.value) and "evil.tar.gz" in str(info.value)
    assert not (out / "folder").exists()  # not even the harmless member before it
    assert not (tmp_path / "outside.txt").exists() and not Path("/tmp/seglab-pwned.txt").exists()


def _zip_member(name: str, mode: int = stat.S_IFREG | 0o644, data: bytes = b"x") -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the file type lives in the high bits of external_attr
    info.external_attr = mode << 16
    return info, data


ZIP_CASES = {
    "symlink_absolute": (_zip_member("data/passwd", stat.S_IFLNK | 0o777, b"/etc/passwd"), "symbolic link"),
    "symlink_dotdot": (_zip_member("data/up", stat.S_IFLNK | 0o777, b"../.."), "symbolic link"),
    "char_device": (_zip_member("data/null", stat.S_IFCHR | 0o666, b""), "device"),
    "fifo": (_zip_member("data/pipe", stat.S_IFIFO | 0o644, b""), "FIFO"),
    "absolute_path": (_zip_member("/tmp/seglab-absolute.txt"), "absolute path"),
    "windows_drive": (_zip_member("C:/seglab.txt"), "absolute path"),
    "dotdot_path": (_zip_member("data/../../outside.txt"), "'..'"),
    "backslash_dotdot": (_zip_member("data\\..\\..\\outside.txt"), "'..'"),
}


@pytest.mark.parametrize("case", ZIP_CASES, ids=list(ZIP_CASES))
def test_crafted_zip_archives_are_refused_before_anything_is_written(case, tmp_path):
    (member, data), reason = ZIP_CASES[case]
    archive = tmp_path / "data" / "evil.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("data/ok.txt", "ok")
        bundle.writestr(member, data)
    out = tmp_path / "data" / "out"
    with pytest.raises(DataError, match=reason) as info:
        extract_archive(archive, out)
    assert repr(member.filename) in str(info.value)
    assert not (out / "data").exists() and not (tmp_path / "outside.txt").exists()


def test_a_plain_zip_still_extracts(tmp_path):
    # The checks above refuse by what a member is, not by refusing zips: regular files and folders pass.
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(_zip_member("data/a.txt", data=b"a")[0], b"a")
        bundle.writestr(_zip_member("data/sub/", stat.S_IFDIR | 0o755, b"")[0], b"")
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "a.txt").read_bytes() == b"a" and (tmp_path / "out" / "data" / "sub").is_dir()


# ---- downloads are verified before anything uses them ----

def test_a_tampered_dataset_archive_is_never_extracted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ALLOW_HTTP_VARIABLE, "1")  # the mirror is a plain-http server on 127.0.0.1
    # The mirror serves archives that differ from the official ones, one with a member that would escape.
    archives = make_pets_archives(tmp_path / "build")
    archives["images.tar.gz"] = _tar(_tar_member("../../escaped.txt"))
    extracted = []
    monkeypatch.setattr(pets, "extract_archive", lambda *args: extracted.append(args))
    with serve_files(archives) as server:
        assert main(["data", "pets", "--root", str(tmp_path / "pets"), "--download", "--base-url", server.url,
                     "--no-progress"]) == 2
    assert "fails its checksum" in capsys.readouterr().err
    assert extracted == []  # the verification failed before extraction was even attempted
    assert not (tmp_path / "escaped.txt").exists() and not list((tmp_path / "pets").glob("*.tar.gz*"))


def test_tampered_weights_are_never_loaded(tmp_path, monkeypatch, capsys):
    from seglab.download import cache_path
    from seglab.models import build_model, pretrained

    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ALLOW_HTTP_VARIABLE, "1")  # the server is plain http on 127.0.0.1
    marker = tmp_path / "marker"
    tampered = pickle.dumps({"features.0.weight": RunsCommand(marker)})
    name = f"vgg16-{hashlib.sha256(b'the genuine file').hexdigest()[:8]}.pth"
    loaded = []
    monkeypatch.setattr(pretrained, "read_state_dict", lambda path: loaded.append(path))
    # Whether the tampered file is only on the server or already sits in the cache, it is refused unread.
    for cached in (False, True):
        with serve_files({name: tampered}) as server:
            url = server.url + name
            # The file the cache would hand out for this URL: where download_to_cache really looks.
            cached_file = cache_path(url, pretrained.cache_dir())
            if cached:
                cached_file.parent.mkdir(parents=True, exist_ok=True)
                cached_file.write_bytes(tampered)
            capsys.readouterr()
            with pytest.raises(WeightsError, match="fails its checksum"):
                build_model("fcn_vgg16", num_classes=2, pretrained_backbone=url)
        if cached:  # the cached file was found, failed its check and was deleted, not used
            assert f"{cached_file} exists but fails its checksum" in capsys.readouterr().err
        assert not cached_file.exists()
        assert not cached_file.with_name(cached_file.name + ".part").exists()
    assert loaded == [] and not marker.exists()


@pytest.fixture
def counting_server():
    """An HTTP server on 127.0.0.1 that counts the requests it gets (and serves nothing)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_checkpoint_naming_weights_urls_loads_without_a_request(trained_run, tmp_path, counting_server):
    url, requests = counting_server
    checkpoint = read_checkpoint(checkpoint_path(trained_run))
    checkpoint[SPEC_KEY]["model_options"]["pretrained_backbone"] = f"{url}/xception41.pth"
    checkpoint["hyper_parameters"]["config"].update(pretrained_backbone=f"{url}/config.pth",
                                                    init_from=f"{url}/init.ckpt")
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    predictor = seglab.load(tmp_path / "evil.ckpt")
    assert predictor.predict(torch.rand(3, 40, 40)).shape == (40, 40)
    legacy = {key: value for key, value in checkpoint.items() if key != SPEC_KEY}
    torch.save(legacy, tmp_path / "legacy.ckpt")  # rebuilt from the saved config, as for checkpoints before specs
    assert seglab.load(tmp_path / "legacy.ckpt").predict(torch.rand(3, 40, 40)).shape == (40, 40)
    assert requests == []
