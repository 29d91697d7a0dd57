"""Download an archive and unpack it into a staging directory, without escaping it.

Download: streamed to `<staging>/<name>.part`; a rerun after an interruption asks
for the rest with `Range: bytes=N-` and appends when the server answers 206 with
that range (a 200 means it ignores ranges: start over). The file takes its final
name only once complete, and must then match --sha256 if given. A server that
changed the file between the two runs is caught by --sha256 only.

Unpack (zip or tar, compressed or not, recognised by content): every member is
checked before anything is written. One that would land outside the staging
directory (a `..` component, an absolute path, a link whose target leaves it,
a device file, a path through a symlink already there) refuses the whole
archive; tar's "data" filter checks again while extracting. zipfile writes a zip
symlink as a small file holding its target, so only its target is checked. The
archive is deleted once unpacked or refused; an interrupted download is kept.

Invariant: nothing is written outside the staging directory.
"""

import hashlib
import logging
import os
import posixpath
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from objmount.errors import EtlError
from objmount.etl.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# Per socket operation (connect, then each read): a stalled server fails the
# download after this long, and a rerun resumes it.
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ExtractReport:
    """What `extract` did: bytes fetched this run and regular files unpacked."""

    downloaded_bytes: int
    files: int


def extract(url: str, staging: Path, sha256: str | None) -> ExtractReport:
    """Download `url` into `staging` (resuming a partial download) and unpack it there.

    Blocks on the network and the disk; raises EtlError for an unreachable or
    failing URL, an interrupted download, a checksum mismatch or an unsafe archive.
    """
    staging.mkdir(parents=True, exist_ok=True)
    archive = staging / archive_name(url)
    downloaded = 0 if archive.exists() else download(url, archive)
    if sha256:
        verify_sha256(archive, sha256)
    try:
        files = unpack(archive, staging)
    except EtlError:
        archive.unlink()
        raise
    archive.unlink()
    return ExtractReport(downloaded_bytes=downloaded, files=files)


def archive_name(url: str) -> str:
    """Return the file name the download of `url` is saved under."""
    name = PurePosixPath(urlsplit(url).path).name
    return name if name not in ("", ".", "..") else "download"


def download(url: str, dest: Path) -> int:
    """Fetch `url` to `dest` via `dest.part`, resuming what a previous run left; return bytes
    fetched now. Raises EtlError when the server cannot be reached, fails or stops early."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after `have`: the file changed or was complete
            part.unlink()
            return download(url, dest)
        raise EtlError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EtlError(f"cannot download {url}: {reason}") from None
    with response:
        content_range = response.headers.get("Content-Range", "")
        if response.status == 206 and not content_range.startswith(f"bytes {have}-"):
            raise EtlError(f"cannot resume {url}: asked for bytes {have}-, server sent "
                           f"{content_range!r}; delete {part} and rerun")
        if response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        fetched = _stream(response, part, have, total, url)
    size = part.stat().st_size
    if total is not None and size < total:
        raise EtlError(f"download of {url} stopped at {size} of {total} bytes: "
                       "rerun to resume it")
    part.replace(dest)
    return fetched


def _stream(response: HTTPResponse, part: Path, have: int, total: int | None,
            url: str) -> int:
    """Append the response body to `part` (truncated first unless `have` > 0) with a bar."""
    fetched = 0
    with open(part, "ab" if have else "wb") as out, \
            progress_bar(f"download {part.stem}", 1, total) as bar:
        bar.advance(have)
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except OSError as exc:  # also http.client.IncompleteRead, socket timeouts
                raise EtlError(f"download of {url} interrupted after {have + fetched} bytes "
                               f"({exc.__class__.__name__}): rerun to resume it") from None
            if not chunk:
                break
            out.write(chunk)
            fetched += len(chunk)
            bar.advance(len(chunk))
        bar.advance(0, files=1)
    return fetched


def verify_sha256(path: Path, expected: str) -> None:
    """Raise EtlError (and delete `path`, so a rerun downloads it again) if its SHA-256 differs."""
    with open(path, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != expected.strip().lower():
        path.unlink()
        raise EtlError(f"{path.name} has SHA-256 {actual}, expected {expected}: deleted it; "
                       "rerun to download it again")


def unpack(archive: Path, dest: Path) -> int:
    """Unpack a zip or tar archive into `dest` after checking every member; return files
    unpacked. Raises EtlError, writing nothing, if any member would land outside `dest`."""
    root = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            return _unzip(archive, root)
        if tarfile.is_tarfile(archive):
            return _untar(archive, root)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise EtlError(f"cannot unpack {archive.name}: {exc}") from None
    raise EtlError(f"{archive.name} is neither a zip nor a tar archive")


def _unzip(archive: Path, root: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for member in members:
            _check_inside(root, member.filename, archive)
            if stat.S_ISLNK(member.external_attr >> 16):
                target = zf.read(member).decode("utf-8", "replace")
                _check_link(root, member.filename, target, archive)
        zf.extractall(root)
    return sum(not member.is_dir() for member in members)


def _untar(archive: Path, root: Path) -> int:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_inside(root, member.name, archive)
            try:
                tarfile.data_filter(member, str(root))
            except tarfile.FilterError as exc:
                raise _refusal(archive, member.name, str(exc)) from None
        tf.extractall(root, members=members, filter="data")
    return sum(member.isfile() for member in members)


def _check_inside(root: Path, name: str, archive: Path) -> None:
    """Refuse a member name that is absolute, has a `..` part, or resolves outside `root`."""
    path = PurePosixPath(name)
    if path.is_absolute():
        raise _refusal(archive, name, "is an absolute path")
    if ".." in path.parts:
        raise _refusal(archive, name, "climbs out with '..'")
    if not Path(os.path.realpath(root / name)).is_relative_to(root):
        raise _refusal(archive, name, f"would be written outside {root} (through a symlink)")


def _check_link(root: Path, name: str, target: str, archive: Path) -> None:
    """Refuse a symlink member whose target, read from its own directory, leaves `root`."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if posixpath.isabs(target) or joined == ".." or joined.startswith("../"):
        raise _refusal(archive, name, f"is a link to {target!r}, outside {root}")


def _refusal(archive: Path, name: str, why: str) -> EtlError:
    return EtlError(f"refused to unpack {archive.name}: member {name!r} {why}; "
                    "nothing was extracted")
