"""Downloading datasets and weights: resumable, checksum-verified, and extracted without trusting the archive.

`download_file` streams into `<dest>.part`, resumes it after an interruption with an HTTP Range request made
conditional by `If-Range` (the ETag or Last-Modified the server sent first, kept in `<dest>.part.validator`), so
that a file changed on the server is downloaded again from zero instead of being joined to the old part; it
verifies the checksum, fsyncs, and only then renames the part file to `dest`, so a file at `dest` is always
complete.
`extract_archive` refuses members that would land outside the target folder, links and device files, and
archives that would unpack to more bytes or files than a cap. Only `https` URLs are fetched (redirects included);
plain `http` needs an explicit `allow_http=True` or `SEGLAB_ALLOW_HTTP=1` (a mirror or test server on a trusted
network). `download_to_cache` keys its cache by the whole URL and always verifies a file whose hash is known.

Why not a library: `torch.hub.load_state_dict_from_url(check_hash=True)` checks the same torchvision-style sha256
prefix, but restarts an interrupted download from zero, knows no md5 (the Pet archives publish md5s) and returns
a loaded state dict rather than a file; pooch (not a dependency) also restarts from zero, and its Untar/Unzip
processors leave the checks to tarfile and zipfile (tarfile's data filter only from Python 3.12, and it still
extracts links that stay inside). Neither resumes with Range nor refuses links, so this module stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import stat
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from seglab.atomic import write_text_atomically
from seglab.errors import DataError
from seglab.version import __version__

_CHUNK = 1 << 20
_USER_AGENT = f"seglab/{__version__} (urllib)"

ALLOW_HTTP_VARIABLE = "SEGLAB_ALLOW_HTTP"
# torchvision's convention (also torch.hub's check_hash): "vgg16-397923af.pth" starts its sha256 with 397923af.
HASH_IN_FILENAME = re.compile(r"-([a-f0-9]{6,})\.[A-Za-z0-9]+$")
# extract_archive's defaults: several times the largest dataset seglab downloads (Oxford-IIIT Pet: ~800 MB,
# ~15,000 files), far below what a decompression bomb would write.
MAX_EXTRACTED_BYTES = 32 * 2**30
MAX_EXTRACTED_FILES = 1_000_000


def _http_allowed(allow_http: bool) -> bool:
    return allow_http or os.environ.get(ALLOW_HTTP_VARIABLE, "").lower() in ("1", "true", "yes")


def require_https(url: str, *, allow_http: bool = False) -> None:
    """Refuses (`DataError`) a URL that is not https: anyone on the path of a plain http transfer could replace
    the file, and a file without a known checksum would then be used as sent."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and _http_allowed(allow_http)):
        return
    if scheme == "http":
        raise DataError(f"refusing to download {url} over plain http, which anyone on the way can tamper with; use "
                        f"its https:// address, or for a mirror on a network you trust set {ALLOW_HTTP_VARIABLE}=1")
    raise DataError(f"cannot download {url}: only https:// URLs are fetched (for a local file, give its path)")


class _RedirectsStaySecure(urllib.request.HTTPRedirectHandler):
    # urllib follows a redirect from https to http silently; the target must pass the same check as the URL.
    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        require_https(newurl, allow_http=self.allow_http)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def expected_sha256_prefix(url: str) -> str | None:
    """The sha256 prefix that a torchvision-style file name carries ("vgg16-397923af.pth": "397923af"), or None."""
    match = HASH_IN_FILENAME.search(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    return match.group(1) if match else None


def cache_path(url: str, folder: Path | str) -> Path:
    """Where `download_to_cache` keeps `url`: its file name behind a short hash of the whole URL, so that two URLs
    with one file name ("…/v1/model.pth", "…/v2/model.pth") never share a cache entry."""
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
    return Path(folder) / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def download_to_cache(url: str, folder: Path | str, *, md5: str | None = None, sha256: str | None = None,
                      sha256_prefix: str | None = None, allow_http: bool = False, progress: bool = True,
                      timeout: float = 60.0) -> Path:
    """`download_file` into `cache_path(url, folder)`. The expected hash is the one given, else the one in a
    torchvision-style file name; a known hash is checked on every call, a cached file's too."""
    if not (md5 or sha256 or sha256_prefix):
        sha256_prefix = expected_sha256_prefix(url)
    return download_file(url, cache_path(url, folder), md5=md5, sha256=sha256, sha256_prefix=sha256_prefix,
                         allow_http=allow_http, progress=progress, timeout=timeout)


def _hashers(md5: str | None, sha256: str | None, sha256_prefix: str | None) -> dict[str, hashlib._Hash]:
    hashers = {}
    if md5:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    if sha256 or sha256_prefix:
        hashers["sha256"] = hashlib.sha256()
    return hashers


def _checksum_failure(
    hashers: dict[str, hashlib._Hash], md5: str | None, sha256: str | None, sha256_prefix: str | None
) -> str | None:
    # Returns a description of the first mismatch, or None when every given checksum agrees.
    if md5 and hashers["md5"].hexdigest() != md5.lower():
        return f"md5 {hashers['md5'].hexdigest()} != expected {md5.lower()}"
    if sha256 and hashers["sha256"].hexdigest() != sha256.lower():
        return f"sha256 {hashers['sha256'].hexdigest()} != expected {sha256.lower()}"
    if sha256_prefix and not hashers["sha256"].hexdigest().startswith(sha256_prefix.lower()):
        return f"sha256 {hashers['sha256'].hexdigest()} does not start with {sha256_prefix.lower()}"
    return None


def _hash_file(path: Path, hashers: dict[str, hashlib._Hash]) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)


def _validator(headers) -> str | None:
    """What identifies the file the server sent, for `If-Range`: its strong ETag, else its Last-Modified date (RFC
    9110 13.1.5 forbids weak ETags there); None when the server sends neither, and then a part is never resumed."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _stored_validator(part: Path, url: str) -> str | None:
    """The validator recorded when `part` was started from `url`, or None (none recorded, another URL)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stored = json.loads(_validator_path(part).read_text(encoding="utf-8"))
        if stored.get("url") == url and isinstance(stored.get("validator"), str):
            return stored["validator"]
    return None


def _start_part(part: Path, url: str, validator: str | None) -> None:
    """Forgets any earlier part and records what identifies the file about to be written into it."""
    part.unlink(missing_ok=True)
    if validator is None:
        _validator_path(part).unlink(missing_ok=True)
    else:
        write_text_atomically(_validator_path(part), json.dumps({"url": url, "validator": validator}) + "\n")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with lightning; without it, no bar rather than no download
        enabled = False
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr)


def _stream_to_part(
    response, url: str, part: Path, offset: int, hashers: dict[str, hashlib._Hash], *, progress: bool
) -> None:
    # Appends the response body to `part` (or rewrites it when the server sent the whole file), feeding the
    # hashers with the whole file's bytes; raises DataError, keeping `part`, when the transfer breaks off.
    status = getattr(response, "status", 200)
    if offset and status != 206:
        print(
            f"seglab: the server of {url} ignored the request to resume at byte {offset} (it does not resume, or "
            "the file changed on the server since the first attempt); downloading from the start",
            file=sys.stderr,
        )
        offset = 0
    if not offset:
        _start_part(part, url, _validator(response.headers))
    elif offset:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise DataError(
                f"resuming {url} failed: asked for bytes from {offset}, the server sent {content_range!r}; "
                f"delete {part} and run again"
            )
    length = response.headers.get("Content-Length")
    expected_total = offset + int(length) if length is not None else None
    if offset:
        _hash_file(part, hashers)
    received = offset
    bar = _progress_bar(expected_total, offset, part.name.removesuffix(".part"), progress)
    try:
        with open(part, "ab" if offset else "wb") as handle:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise DataError(
                        f"the transfer of {url} broke off after {received:,} bytes ({error}); run the same command "
                        f"again to resume from {part}"
                    ) from None
                if not chunk:
                    break
                handle.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if expected_total is not None and received < expected_total:
        raise DataError(
            f"the transfer of {url} broke off after {received:,} of {expected_total:,} bytes; run the same command "
            f"again to resume from {part}"
        )


def download_file(
    url: str,
    dest_path: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    allow_http: bool = False,
) -> Path:
    """Download `url` (https; http only with `allow_http` or `SEGLAB_ALLOW_HTTP=1`) to `dest_path`, resuming an
    earlier partial download, and verify its checksum.

    Idempotent: an existing `dest_path` that matches the checksum (or any existing file when no checksum is
    given) is returned without network access. A `dest_path` that fails the checksum is downloaded again.
    The data goes to `dest_path + ".part"` and is renamed to `dest_path` only after every given checksum
    (`md5`, `sha256`, `sha256_prefix` of the sha256) agrees; on a mismatch the part file is deleted and a
    `DataError` raised. An interrupted transfer keeps the part file and raises a `DataError`; calling again
    resumes it with an HTTP Range request conditional on `If-Range`, only where the server identified its file
    (strong ETag or Last-Modified) the first time and still sends the same one; anything else (no validator, a
    changed file, a server that ignores Range) restarts from zero. The file is fsynced before the rename.
    """
    require_https(url, allow_http=allow_http)
    dest = Path(dest_path)
    part = dest.with_name(dest.name + ".part")
    has_checksum = bool(md5 or sha256 or sha256_prefix)
    if dest.is_file():
        if not has_checksum:
            return dest
        hashers = _hashers(md5, sha256, sha256_prefix)
        _hash_file(dest, hashers)
        failure = _checksum_failure(hashers, md5, sha256, sha256_prefix)
        if failure is None:
            return dest
        # Deleted now: if the download fails too, no file that failed its check is left where one is looked for.
        dest.unlink()
        print(f"seglab: {dest} exists but fails its checksum ({failure}); deleted it, downloading it again",
              file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)

    validator = _stored_validator(part, url)
    offset = part.stat().st_size if part.is_file() and validator is not None else 0
    response = _open(url, offset, validator, allow_http=allow_http, timeout=timeout)
    if response is not None and offset and response.status == 206 and _validator(response.headers) != validator:
        # A server that honours Range but not If-Range: the validator it sends with the rest says the file changed.
        response.close()
        print(f"seglab: {url} changed on the server since the first attempt ({validator} -> "
              f"{_validator(response.headers)}); downloading it from the start", file=sys.stderr)
        offset = 0
        response = _open(url, 0, None, allow_http=allow_http, timeout=timeout)

    hashers = _hashers(md5, sha256, sha256_prefix)
    if response is None:
        _hash_file(part, hashers)
    else:
        with response:
            _stream_to_part(response, url, part, offset, hashers, progress=progress)

    if has_checksum:
        failure = _checksum_failure(hashers, md5, sha256, sha256_prefix)
        if failure is not None:
            part.unlink(missing_ok=True)
            _validator_path(part).unlink(missing_ok=True)
            raise DataError(
                f"{url} downloaded but fails its checksum ({failure}); the partial file was deleted. The server "
                "sent a different or damaged file: retry, or check that the mirror serves the official file"
            )
    # On disk before it takes the name: after a power cut, `dest` is whole or absent, never a named hole.
    _fsync(part)
    os.replace(part, dest)
    _validator_path(part).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the rename itself, where the file system can sync a folder
        _fsync(dest.parent)
    return dest


def _open(url: str, offset: int, validator: str | None, *, allow_http: bool, timeout: float):
    """The server's response for `url` from byte `offset` (a Range request conditional on `validator` through
    If-Range when `offset`), or None when the part file already holds all the server has (416)."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        assert validator is not None  # a part file is resumed only with the validator it was started with
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        opener = urllib.request.build_opener(_RedirectsStaySecure(_http_allowed(allow_http)))
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The part file already holds everything the (unchanged) file has: verify it as it is.
            return None
        raise DataError(
            f"downloading {url} failed: the server answered HTTP {error.code} {error.reason}; check the URL "
            "(or the mirror it points to)"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"cannot reach {url} ({reason}); check the network or use a mirror") from None


def _unsafe_reason(name: str) -> str | None:
    # Why an archive member name must not be extracted, or None if it stays inside the target folder.
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in posix.parts:
        return "path with '..'"
    return None


def _zip_type_reason(info: zipfile.ZipInfo) -> str | None:
    # Zip files made on Unix keep the file type in the high bits of external_attr; zipfile would write a link or
    # a device entry out as a regular file holding its target, which is still not what the archive claims to be.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        return "symbolic link; archives with links are not extracted"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device, FIFO or other special file"
    return None


def _too_big(archive: Path, files: int, total: int, max_files: int, max_bytes: int) -> None:
    # Raises before anything is written when the archive would unpack to more files or bytes than the caps.
    if files > max_files:
        raise DataError(f"{archive}: refusing to extract more than {max_files:,} files (the limit); a genuine "
                        "dataset archive holds far fewer. If this one is genuine, extract it by hand or pass a larger "
                        "max_files")
    if total > max_bytes:
        raise DataError(f"{archive}: refusing to extract: its files unpack to more than {max_bytes:,} bytes (the "
                        f"limit), {total:,} bytes so far; a decompression bomb looks like this. If the archive is "
                        "genuine, extract it by hand or pass a larger max_bytes")


def extract_archive(archive: Path | str, dest_dir: Path | str, *, max_bytes: int = MAX_EXTRACTED_BYTES,
                    max_files: int = MAX_EXTRACTED_FILES) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into `dest_dir`, refusing unsafe members.

    Every member is checked before anything is written: absolute paths, `..` components, symbolic and hard
    links, devices and FIFOs make the whole archive refused with a `DataError`, and so do more than `max_files`
    members or more than `max_bytes` of unpacked data (the sizes the archive declares, which are what extraction
    writes). Tar extraction also uses Python's `filter="data"` where available (3.10.12+, 3.11.4+), which drops
    set-uid bits and the like.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
            for info in infos:
                reason = _unsafe_reason(info.filename) or _zip_type_reason(info)
                if reason is not None:
                    raise DataError(f"{archive}: refusing to extract member {info.filename!r} ({reason})")
            # zipfile writes at most file_size bytes of a member: the declared sizes bound what lands on disk.
            _too_big(archive, len(infos), sum(info.file_size for info in infos), max_files, max_bytes)
            bundle.extractall(dest_dir)
        return dest_dir
    try:
        # The whole index is read first (stopping at the caps), so nothing is written from an archive that is
        # refused.
        with tarfile.open(archive) as bundle:
            members, total = [], 0
            for member in bundle:
                members.append(member)
                total += member.size if member.isfile() else 0
                _too_big(archive, len(members), total, max_files, max_bytes)
                reason = _unsafe_reason(member.name)
                if reason is None and (member.issym() or member.islnk()):
                    # Even a link that stays inside could be followed by a later member's write.
                    kind = "symbolic link" if member.issym() else "hard link"
                    reason = f"{kind} to {member.linkname!r}; archives with links are not extracted"
                if reason is None and not (member.isfile() or member.isdir()):
                    reason = "device, FIFO or other special file"
                if reason is not None:
                    raise DataError(f"{archive}: refusing to extract member {member.name!r} ({reason})")
            if hasattr(tarfile, "data_filter"):
                bundle.extractall(dest_dir, members=members, filter="data")
            else:  # older Pythons: the checks above are the equivalent of the data filter
                bundle.extractall(dest_dir, members=members)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{archive}: not a readable, complete archive ({error}); delete it, download again") from None
    return dest_dir
