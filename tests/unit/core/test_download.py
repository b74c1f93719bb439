"""download_file (resume, checksums, idempotence, HTTP errors) and extract_archive (unsafe members refused)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest

from data_fixtures import serve_files
from seglab.download import (
    ALLOW_HTTP_VARIABLE,
    cache_path,
    download_file,
    download_to_cache,
    extract_archive,
)
from seglab.errors import DataError

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes, several chunks of the server's writes
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _local_http_server_allowed(monkeypatch):
    """The test server is plain http on 127.0.0.1: allowed here the one way seglab allows http, explicitly."""
    monkeypatch.setenv(ALLOW_HTTP_VARIABLE, "1")


def test_download_verifies_and_is_idempotent(tmp_path, capsys):
    dest = tmp_path / "sub" / "blob.bin"
    with serve_files({"blob.bin": PAYLOAD}) as server:
        path = download_file(server.url + "blob.bin", dest, md5=MD5, sha256=SHA256, sha256_prefix=SHA256[:8])
        assert path == dest and dest.read_bytes() == PAYLOAD
        assert not dest.with_name("blob.bin.part").exists()
        download_file(server.url + "blob.bin", dest, md5=MD5)  # present and verified: no request
        assert len(server.requests) == 1
    assert "blob.bin" in capsys.readouterr().err  # the progress bar names the file


def test_an_interrupted_download_from_a_server_without_validators_starts_again_from_zero(tmp_path):
    # This server sends neither ETag nor Last-Modified: nothing proves the file is still the one the part holds
    # the start of (resuming with If-Range: tests/unit/core/test_download_resume.py).
    dest = tmp_path / "blob.bin"
    with serve_files({"blob.bin": PAYLOAD}, cut_after={"blob.bin": 30000}, validators=False) as server:
        with pytest.raises(DataError, match=r"broke off.*run the same command again"):
            download_file(server.url + "blob.bin", dest, md5=MD5, progress=False)
        part = tmp_path / "blob.bin.part"
        assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)
        download_file(server.url + "blob.bin", dest, md5=MD5, progress=False)
        assert server.requests[-1] == ("/blob.bin", None)
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_a_part_file_of_unknown_origin_is_never_appended_to(tmp_path):
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(b"garbage that a naive append would keep")
    with serve_files({"blob.bin": PAYLOAD}, ignore_range=True) as server:
        download_file(server.url + "blob.bin", dest, sha256=SHA256, progress=False)
        assert server.requests == [("/blob.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_after_416(tmp_path):
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    with serve_files({"blob.bin": PAYLOAD}) as server:
        download_file(server.url + "blob.bin", dest, md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_refused_and_part_deleted(tmp_path):
    dest = tmp_path / "blob.bin"
    with serve_files({"blob.bin": PAYLOAD}) as server:
        with pytest.raises(DataError, match="fails its checksum") as info:
            download_file(server.url + "blob.bin", dest, md5="0" * 32, progress=False)
        assert MD5 in str(info.value)
        with pytest.raises(DataError, match="does not start with"):
            download_file(server.url + "blob.bin", dest, sha256_prefix="ffffffff", progress=False)
    assert not dest.exists() and not (tmp_path / "blob.bin.part").exists()


def test_corrupt_existing_file_is_downloaded_again(tmp_path):
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"stale")
    with serve_files({"blob.bin": PAYLOAD}) as server:
        download_file(server.url + "blob.bin", dest, md5=MD5, progress=False)
        assert len(server.requests) == 1
    assert dest.read_bytes() == PAYLOAD


def test_http_error_names_status_and_url(tmp_path):
    with serve_files({}) as server, pytest.raises(DataError, match="HTTP 404") as info:
        download_file(server.url + "missing.tar.gz", tmp_path / "x", progress=False)
    assert "missing.tar.gz" in str(info.value)


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        ok = tarfile.TarInfo("folder/ok.txt")
        ok.size = 2
        bundle.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        bundle.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buffer.getvalue()


def test_extract_archive_extracts_safe_tar(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_with(tarfile.TarInfo("folder/sub/b.txt"), b"hello"))
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "folder" / "sub" / "b.txt").read_bytes() == b"hello"
    assert (tmp_path / "out" / "folder" / "ok.txt").read_bytes() == b"ok"


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("../escape.txt"), "'..'"),
        (tarfile.TarInfo("folder/../../escape.txt"), "'..'"),
        (tarfile.TarInfo("/tmp/seglab-absolute.txt"), "absolute"),
        (_symlink("folder/link", "/etc/passwd"), "link"),
        (_device("folder/null"), "device"),
    ],
)
def test_extract_archive_refuses_unsafe_tar_members(tmp_path, member, reason):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar_with(member, b"x" if member.isfile() else b""))
    with pytest.raises(DataError, match=reason) as info:
        extract_archive(archive, tmp_path / "out")
    assert member.name in str(info.value)
    assert not (tmp_path / "out" / "folder").exists()  # refused before anything was written
    assert not (tmp_path / "escape.txt").exists()


def test_extract_archive_handles_zip_and_refuses_traversal(tmp_path):
    good, evil = tmp_path / "good.zip", tmp_path / "evil.zip"
    with zipfile.ZipFile(good, "w") as bundle:
        bundle.writestr("data/a.txt", "a")
    with zipfile.ZipFile(evil, "w") as bundle:
        bundle.writestr("../escape.txt", "x")
    extract_archive(good, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "a.txt").read_text() == "a"
    with pytest.raises(DataError, match=r"'\.\.'"):
        extract_archive(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_extract_archive_reports_damaged_archive(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(_tar_with(tarfile.TarInfo("folder/b.txt"), b"y" * 5000)[:60])
    with pytest.raises(DataError, match=r"broken\.tar\.gz.*download again"):
        extract_archive(archive, tmp_path / "out")


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/blob.bin", "ftp://127.0.0.1/blob.bin", "file:///etc/passwd"])
def test_only_https_is_fetched_unless_plain_http_is_allowed_explicitly(tmp_path, monkeypatch, url):
    monkeypatch.delenv(ALLOW_HTTP_VARIABLE)
    dest = tmp_path / "blob.bin"
    with serve_files({"blob.bin": PAYLOAD}) as server:
        url = url.format(port=server.server_address[1])
        with pytest.raises(DataError, match=r"over plain http|only https:// URLs") as raised:
            download_file(url, dest, progress=False)
        assert url in str(raised.value) and server.requests == [] and not dest.exists()
        if url.startswith("http:"):
            assert download_file(url, dest, md5=MD5, progress=False, allow_http=True).read_bytes() == PAYLOAD
            monkeypatch.setenv(ALLOW_HTTP_VARIABLE, "1")
            assert download_file(url, tmp_path / "again.bin", md5=MD5, progress=False).read_bytes() == PAYLOAD


def test_the_cache_is_keyed_by_the_whole_url(tmp_path):
    other = PAYLOAD[::-1]
    with serve_files({"v1/model.pth": PAYLOAD, "v2/model.pth": other}) as server:
        first = download_to_cache(server.url + "v1/model.pth", tmp_path, progress=False)
        second = download_to_cache(server.url + "v2/model.pth", tmp_path, progress=False)
    assert first != second and first.name.endswith("-model.pth") and second.name.endswith("-model.pth")
    assert first.read_bytes() == PAYLOAD and second.read_bytes() == other
    assert cache_path(server.url + "v1/model.pth", tmp_path) == first


def test_a_known_hash_is_verified_every_time_also_for_a_cached_file(tmp_path, capsys):
    name = f"weights-{SHA256[:8]}.pth"  # torchvision-style: the name carries its sha256 prefix
    with serve_files({name: PAYLOAD, "plain.pth": PAYLOAD}) as server:
        cached = download_to_cache(server.url + name, tmp_path, progress=False)
        cached.write_bytes(b"swapped in the cache")
        assert download_to_cache(server.url + name, tmp_path, progress=False).read_bytes() == PAYLOAD
        assert "fails its checksum" in capsys.readouterr().err and len(server.requests) == 2
        # A hash passed in is checked against the cached file in the same way.
        plain = download_to_cache(server.url + "plain.pth", tmp_path, sha256=SHA256, progress=False)
        plain.write_bytes(b"swapped too")
        assert download_to_cache(server.url + "plain.pth", tmp_path, sha256=SHA256, progress=False).read_bytes() \
            == PAYLOAD
        server.files["/" + name] = b"tampered on the server"
        cached.write_bytes(b"swapped again")
        with pytest.raises(DataError, match="fails its checksum"):
            download_to_cache(server.url + name, tmp_path, progress=False)
    assert not cached.exists()


def _archive_of(kind: str, count: int, size: int) -> bytes:
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for index in range(count):
                bundle.writestr(f"data/{index}.bin", b"\0" * size)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
            for index in range(count):
                info = tarfile.TarInfo(f"data/{index}.bin")
                info.size = size
                bundle.addfile(info, io.BytesIO(b"\0" * size))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_extraction_is_capped_in_files_and_bytes_and_names_the_archive_and_the_limit(tmp_path, kind):
    archive = tmp_path / f"bomb.{kind}"
    archive.write_bytes(_archive_of(kind, count=3, size=100_000))  # 300 kB of zeros: a few hundred bytes packed
    assert archive.stat().st_size < 5_000
    with pytest.raises(DataError, match=r"refusing to extract more than 2 files \(the limit\)") as raised:
        extract_archive(archive, tmp_path / "out", max_files=2)
    assert str(archive) in str(raised.value)
    with pytest.raises(DataError, match=r"unpack to more than 250,000 bytes \(the limit\)") as raised:
        extract_archive(archive, tmp_path / "out", max_bytes=250_000)
    assert str(archive) in str(raised.value)
    assert not (tmp_path / "out" / "data").exists()  # refused before anything was written
    extract_archive(archive, tmp_path / "out", max_files=3, max_bytes=300_000)
    assert len(list((tmp_path / "out" / "data").iterdir())) == 3
