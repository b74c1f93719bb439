"""A resumed download never joins two files: the part file is continued only where the server proves, through
`If-Range` with the ETag or Last-Modified it sent first, that its file is still the same one; otherwise the
download starts again from zero. The finished file is fsynced before it is renamed into place.

The server here is the test's own (127.0.0.1): it honours `Range` and `If-Range` as RFC 9110 says, can cut a
transfer short, and changes its file between attempts."""

from __future__ import annotations

import os
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_fixtures import running_in_thread
from seglab import download
from seglab.download import ALLOW_HTTP_VARIABLE, download_file
from seglab.errors import DataError

OLD = bytes(range(256)) * 400  # 102,400 bytes
NEW = bytes(reversed(range(256))) * 400  # the same length: only the content tells the two apart


class ChangingFile(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        server.requests.append({name: self.headers.get(name) for name in ("Range", "If-Range")})
        body, validators = server.body, server.validators()
        start = 0
        wanted = self.headers.get("Range")
        condition = self.headers.get("If-Range")
        # RFC 9110 13.1.5: a Range is honoured only if If-Range (when sent) matches the current validator.
        honoured = wanted and (server.ignore_if_range or condition is None or condition in validators.values())
        if honoured:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        for name, value in validators.items():
            self.send_header(name, value)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cut_next is not None:
            self.wfile.write(payload[:server.cut_next])
            server.cut_next = None
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def changing_server(*, etag: bool = True, last_modified: bool = True, ignore_if_range: bool = False):
    """`server.body` at `server.url`; `server.change(body)` replaces it (a new ETag and a later Last-Modified)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChangingFile)
    server.daemon_threads = True
    server.body, server.version, server.cut_next, server.requests = OLD, 1, None, []
    server.ignore_if_range = ignore_if_range

    def validators() -> dict[str, str]:
        found = {}
        if etag:
            found["ETag"] = f'"v{server.version}"'
        if last_modified:
            found["Last-Modified"] = formatdate(1_700_000_000 + 3600 * server.version, usegmt=True)
        return found

    def change(body: bytes) -> None:
        server.body, server.version = body, server.version + 1

    server.validators, server.change = validators, change
    server.url = f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
    with running_in_thread(server):
        yield server


@pytest.fixture(autouse=True)
def _local_http_server_allowed(monkeypatch):
    monkeypatch.setenv(ALLOW_HTTP_VARIABLE, "1")


def interrupted(server, dest) -> int:
    """A first attempt that breaks off after 30,000 bytes; returns the size of the part file it leaves."""
    server.cut_next = 30_000
    with pytest.raises(DataError, match="broke off"):
        download_file(server.url, dest, progress=False)
    return dest.with_name(dest.name + ".part").stat().st_size


@pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])
def test_a_file_changed_on_the_server_between_attempts_is_downloaded_whole_not_joined(tmp_path, capsys, validator):
    dest = tmp_path / "weights.bin"
    with changing_server(etag=validator == "ETag", last_modified=validator == "Last-Modified") as server:
        first = server.validators()[validator]
        assert interrupted(server, dest) == 30_000
        server.change(NEW)
        download_file(server.url, dest, progress=False)  # no checksum known: only If-Range can tell
        assert server.requests[-1] == {"Range": "bytes=30000-", "If-Range": first}
    assert dest.read_bytes() == NEW  # not OLD[:30000] + NEW[30000:]
    assert "the file changed on the server since the first attempt" in capsys.readouterr().err
    assert not dest.with_name("weights.bin.part").exists()


def test_an_unchanged_file_resumes_where_it_broke_off(tmp_path):
    dest = tmp_path / "weights.bin"
    with changing_server() as server:
        kept = interrupted(server, dest)
        download_file(server.url, dest, progress=False)
        assert server.requests[-1] == {"Range": f"bytes={kept}-", "If-Range": '"v1"'}  # the strong ETag first
    assert dest.read_bytes() == OLD


def test_a_server_that_honours_range_but_not_if_range_is_caught_by_the_validator_it_sends(tmp_path, capsys):
    dest = tmp_path / "weights.bin"
    with changing_server(ignore_if_range=True) as server:
        interrupted(server, dest)
        server.change(NEW)
        download_file(server.url, dest, progress=False)
        assert server.requests[-1] == {"Range": None, "If-Range": None}  # started again from zero
    assert dest.read_bytes() == NEW
    assert "changed on the server" in capsys.readouterr().err


def test_a_part_file_without_a_validator_is_not_resumed(tmp_path):
    dest = tmp_path / "weights.bin"
    dest.with_name("weights.bin.part").write_bytes(OLD[:30_000])  # from a server that sent no validator
    with changing_server() as server:
        server.change(NEW)
        download_file(server.url, dest, progress=False)
        assert server.requests == [{"Range": None, "If-Range": None}]
    assert dest.read_bytes() == NEW


def test_the_file_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    dest = tmp_path / "weights.bin"
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(descriptor):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    def recording_replace(source, target):
        events.append(("replace", os.path.realpath(source)))
        replace(source, target)

    monkeypatch.setattr(download.os, "fsync", recording_fsync)
    monkeypatch.setattr(download.os, "replace", recording_replace)
    with changing_server() as server:
        download_file(server.url, dest, progress=False)
    part = str(dest.with_name("weights.bin.part").resolve())
    assert ("replace", part) in events
    assert ("fsync", part) in events[:events.index(("replace", part))]
    assert dest.read_bytes() == OLD
