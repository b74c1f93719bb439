"""Downloading datasets and weights: resumable, checksum-verified, and extracted without trusting the archive.

`download_file` streams into `<dest>.part`, resumes it with an HTTP Range request after an interruption,
verifies the checksum and only then renames the part file to `dest`, so a file at `dest` is always complete.
`extract_archive` refuses members that would land outside the target folder, links and device files.

Why not a library: `torch.hub.load_state_dict_from_url(check_hash=True)` checks the same torchvision-style sha256
prefix, but restarts an interrupted download from zero, knows no md5 (the Pet archives publish md5s) and returns
a loaded state dict rather than a file; pooch (not a dependency) also restarts from zero, and its Untar/Unzip
processors leave the checks to tarfile and zipfile (tarfile's data filter only from Python 3.12, and it still
extracts links that stay inside). Neither resumes with Range nor refuses links, so this module stays.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from seglab.errors import DataError
from seglab.version import __version__

_CHUNK = 1 << 20
_USER_AGENT = f"seglab/{__version__} (urllib)"


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
    # Appends the response body to `part` (or rewrites it when the server ignored the Range request), feeding
    # the hashers with the whole file's bytes; raises DataError, keeping `part`, when the transfer breaks off.
    status = getattr(response, "status", 200)
    if offset and status != 206:
        print(
            f"seglab: the server of {url} ignored the request to resume at byte {offset}; downloading from the start",
            file=sys.stderr,
        )
        offset = 0
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
) -> Path:
    """Download `url` to `dest_path`, resuming an earlier partial download, and verify its checksum.

    Idempotent: an existing `dest_path` that matches the checksum (or any existing file when no checksum is
    given) is returned without network access. A `dest_path` that fails the checksum is downloaded again.
    The data goes to `dest_path + ".part"` and is renamed to `dest_path` only after every given checksum
    (`md5`, `sha256`, `sha256_prefix` of the sha256) agrees; on a mismatch the part file is deleted and a
    `DataError` raised. An interrupted transfer keeps the part file and raises a `DataError`; calling again
    resumes it with an HTTP Range request (a server that ignores Range makes the download restart from zero).
    """
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
        print(f"seglab: {dest} exists but fails its checksum ({failure}); downloading it again", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)

    hashers = _hashers(md5, sha256, sha256_prefix)
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The part file already holds everything the server has: verify it as it is.
            response = None
        else:
            raise DataError(
                f"downloading {url} failed: the server answered HTTP {error.code} {error.reason}; check the URL "
                "(or the mirror it points to)"
            ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"cannot reach {url} ({reason}); check the network or use a mirror") from None

    if response is None:
        _hash_file(part, hashers)
    else:
        with response:
            _stream_to_part(response, url, part, offset, hashers, progress=progress)

    if has_checksum:
        failure = _checksum_failure(hashers, md5, sha256, sha256_prefix)
        if failure is not None:
            part.unlink(missing_ok=True)
            raise DataError(
                f"{url} downloaded but fails its checksum ({failure}); the partial file was deleted. The server "
                "sent a different or damaged file: retry, or check that the mirror serves the official file"
            )
    os.replace(part, dest)
    return dest


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


def extract_archive(archive: Path | str, dest_dir: Path | str) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into `dest_dir`, refusing unsafe members.

    Every member is checked before anything is written: absolute paths, `..` components, symbolic and hard
    links, devices and FIFOs make the whole archive refused with a `DataError`. Tar extraction also uses
    Python's `filter="data"` where available (3.10.12+, 3.11.4+), which drops set-uid bits and the like.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                reason = _unsafe_reason(info.filename) or _zip_type_reason(info)
                if reason is not None:
                    raise DataError(f"{archive}: refusing to extract member {info.filename!r} ({reason})")
            bundle.extractall(dest_dir)
        return dest_dir
    try:
        # getmembers() reads the whole index first, so nothing is written from an archive that is refused.
        with tarfile.open(archive) as bundle:
            members = bundle.getmembers()
            for member in members:
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
