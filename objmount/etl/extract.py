"""Download an archive and unpack it into a staging directory, without escaping it.

Download: into the staging directory's private DOWNLOAD_DIR (staging.py), which
no archive member may name, so nothing unpacked can overwrite the archive or be
deleted with it. Streamed to `<name>.part` there; a rerun after an interruption
asks for the rest with `Range: bytes=N-` and appends when the server answers
206 with that range (a 200 means it ignores ranges: start over). The file takes
its final name only once complete, and must then match --sha256 if given. A
server that changed the file between the two runs is caught by --sha256 only.

Unpack (zip or tar, compressed or not, recognised by content): every member is
checked before anything is written. One that would land outside the staging
directory (a `..` component, an absolute path, a link whose target leaves it,
a device file, a path through a symlink already there) or in DOWNLOAD_DIR
refuses the whole archive; while extracting, tar's "data" filter checks again,
and so do we through the links the archive made so far. zipfile writes a zip
symlink as a small file holding its target, so only its target is checked.
Files keep the archive's permissions as tar's "data" filter does: never
setuid, setgid or writable by group or others, always readable and writable by
the owner; a zip member without Unix permissions gets the default. The archive
is deleted once unpacked or refused; an interrupted download is kept.

A `user:password@` in the URL is sent as HTTP Basic auth, to that host only.
Messages name the URL without its userinfo or query string (log.redact_url),
and those parts are registered for redaction: a presigned or `user:pass@` URL
never shows.

Invariant: nothing is written outside the staging directory, and the staging
directory is private to the user.
"""

import base64
import contextlib
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
from urllib.parse import unquote, urlsplit

from objmount import log as logsetup
from objmount.errors import EtlError
from objmount.etl.progress import progress_bar
from objmount.etl.staging import DOWNLOAD_DIR, data_files, download_dir, staging_dir

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# ZipInfo.create_system of archives made on Unix: external_attr holds st_mode << 16.
_ZIP_UNIX = 3
# Per socket operation (connect, then each read): a stalled server fails the
# download after this long, and a rerun resumes it.
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ExtractReport:
    """What `extract` did: where, bytes fetched this run, and the dataset's files in the
    staging directory afterwards (staging.data_files: what load would upload)."""

    staging: Path
    downloaded_bytes: int
    files: int


def extract(url: str, staging: Path, sha256: str | None) -> ExtractReport:
    """Download `url` into `staging` (resuming a partial download) and unpack it there.

    Blocks on the network and the disk; raises EtlError for an unreachable or
    failing URL, an interrupted download, a checksum mismatch or an unsafe archive,
    and ConfigError for a staging directory that is not private to the user.
    """
    logsetup.register_url(url)
    staging = staging_dir(staging)
    downloads = download_dir(staging)
    archive = downloads / archive_name(url)
    downloaded = 0 if archive.exists() else download(url, archive)
    if sha256:
        verify_sha256(archive, sha256)
    try:
        unpack(archive, staging)
    except EtlError:
        _discard(archive)
        raise
    _discard(archive)
    return ExtractReport(staging=staging, downloaded_bytes=downloaded,
                         files=sum(1 for _ in data_files(staging)))


def _discard(archive: Path) -> None:
    """Delete the archive, and its directory unless another download is left in it."""
    archive.unlink()
    with contextlib.suppress(OSError):
        archive.parent.rmdir()


def archive_name(url: str) -> str:
    """Return the file name the download of `url` is saved under."""
    name = PurePosixPath(urlsplit(url).path).name
    return name if name not in ("", ".", "..") else "download"


def download(url: str, dest: Path) -> int:
    """Fetch `url` to `dest` via `dest.part`, resuming what a previous run left; return bytes
    fetched now. Raises EtlError when the server cannot be reached, fails or stops early."""
    part = dest.with_name(dest.name + ".part")
    shown = logsetup.redact_url(url)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(_request(url, headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after `have`: the file changed or was complete
            part.unlink()
            return download(url, dest)
        raise EtlError(f"cannot download {shown}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc)).replace(url, shown)
        raise EtlError(f"cannot download {shown}: {reason}") from None
    with response:
        content_range = response.headers.get("Content-Range", "")
        if response.status == 206 and not content_range.startswith(f"bytes {have}-"):
            raise EtlError(f"cannot resume {shown}: asked for bytes {have}-, server sent "
                           f"{content_range!r}; delete {part} and rerun")
        if response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        fetched = _stream(response, part, have, total, shown)
    size = part.stat().st_size
    if total is not None and size < total:
        raise EtlError(f"download of {shown} stopped at {size} of {total} bytes: "
                       "rerun to resume it")
    part.replace(dest)
    return fetched


def _request(url: str, headers: dict[str, str]) -> urllib.request.Request:
    """A GET of `url`; its `user:password@`, if any, sent as HTTP Basic auth to that host
    only (urllib would take it for part of the host name, and copies headers into
    redirects unless they are "unredirected")."""
    parts = urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url, headers=headers)
    request = urllib.request.Request(parts._replace(netloc=parts.netloc.rpartition("@")[2])
                                     .geturl(), headers=headers)
    user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    request.add_unredirected_header(
        "Authorization", "Basic " + base64.b64encode(user_password.encode()).decode())
    return request


def _stream(response: HTTPResponse, part: Path, have: int, total: int | None,
            shown: str) -> int:
    """Append the response body to `part` (truncated first unless `have` > 0) with a bar;
    `shown` is the URL as messages name it."""
    fetched = 0
    with open(part, "ab" if have else "wb") as out, \
            progress_bar(f"download {part.stem}", 1, total) as bar:
        bar.advance(have)
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except OSError as exc:  # also http.client.IncompleteRead, socket timeouts
                raise EtlError(f"download of {shown} interrupted after {have + fetched} bytes "
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
    """Unpack a zip or tar archive into `dest` after checking every member; return the
    members unpacked. Raises EtlError, writing nothing, if any member would land outside
    `dest` or in its DOWNLOAD_DIR (a tar whose links lead a later member there is
    refused when that member comes, with the earlier ones written)."""
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
        for member in members:
            path = zf.extract(member, root)
            mode = _zip_file_mode(member)
            if mode is not None:
                os.chmod(path, mode)
    return sum(not member.is_dir() for member in members)


def _zip_file_mode(member: zipfile.ZipInfo) -> int | None:
    """The permissions tar's "data" filter would give this zip member if it is a regular
    file with Unix permissions (made on Unix): None otherwise, for the default.

    That rule: no setuid, setgid or sticky bit, no write for group or others; the
    owner may always read and write, and the exec bits stay only if the owner's does.
    """
    mode = member.external_attr >> 16
    if (member.is_dir() or member.create_system != _ZIP_UNIX
            or stat.S_IFMT(mode) not in (0, stat.S_IFREG) or not stat.S_IMODE(mode)):
        return None
    mode &= 0o755
    if not mode & stat.S_IXUSR:
        mode &= ~0o111
    return mode | 0o600


def _untar(archive: Path, root: Path) -> int:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_inside(root, member.name, archive)
            try:
                checked = tarfile.data_filter(member, str(root))
            except tarfile.FilterError as exc:
                raise _refusal(archive, member.name, str(exc)) from None
            _check_link_target(root, checked, archive)

        def data_and_not_downloads(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
            """The "data" filter, then our checks again through the links made so far."""
            checked = tarfile.data_filter(member, path)
            _check_inside(root, checked.name, archive, written=True)
            _check_link_target(root, checked, archive, written=True)
            return checked

        tf.extractall(root, members=members, filter=data_and_not_downloads)
    return sum(member.isfile() for member in members)


def _check_inside(root: Path, name: str, archive: Path, written: bool = False) -> None:
    """Refuse a member name that is absolute, has a `..` part, or resolves outside `root`
    or into its DOWNLOAD_DIR; `written`: some members are unpacked already."""
    path = PurePosixPath(name)
    if path.is_absolute():
        raise _refusal(archive, name, "is an absolute path")
    if ".." in path.parts:
        raise _refusal(archive, name, "climbs out with '..'")
    _check_resolved(root, root / name, name, archive, written)


def _check_link_target(root: Path, member: tarfile.TarInfo, archive: Path,
                       written: bool = False) -> None:
    """Refuse a tar link whose target (after the data filter's checks) is in DOWNLOAD_DIR."""
    if member.issym():
        _check_resolved(root, root / posixpath.dirname(member.name) / member.linkname,
                        member.name, archive, written)
    elif member.islnk():
        _check_resolved(root, root / member.linkname, member.name, archive, written)


def _check_resolved(root: Path, path: Path, name: str, archive: Path, written: bool) -> None:
    """Refuse member `name` if `path`, symlinks resolved, leaves `root` or enters DOWNLOAD_DIR."""
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(root):
        raise _refusal(archive, name, f"would be written outside {root} (through a symlink)",
                       written)
    if resolved.relative_to(root).parts[:1] == (DOWNLOAD_DIR,):
        raise _refusal(archive, name, f"uses {DOWNLOAD_DIR}/, where objmount downloads",
                       written)


def _check_link(root: Path, name: str, target: str, archive: Path) -> None:
    """Refuse a symlink member whose target, read from its own directory, leaves `root`."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if posixpath.isabs(target) or joined == ".." or joined.startswith("../"):
        raise _refusal(archive, name, f"is a link to {target!r}, outside {root}")


def _refusal(archive: Path, name: str, why: str, written: bool = False) -> EtlError:
    done = ("the members before it are unpacked; delete them" if written
            else "nothing was extracted")
    return EtlError(f"refused to unpack {archive.name}: member {name!r} {why}; {done}")
