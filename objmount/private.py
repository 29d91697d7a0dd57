"""Directories and files private to the user: what objmount writes, and where it reads back.

Everything objmount writes (the block cache, ETL staging, control sockets, logs)
goes through here, so another local user can neither read it nor plant what it
reads back.

Invariants:
- a directory objmount uses is owned by the user and not writable by group or
  others; one it creates (missing parents included) is made 0700; an existing
  one of the user's that others may read (an older objmount made it 0755) is
  narrowed to 0700;
- every ancestor of it is owned by the user or root, and writable by group or
  others only if it is root-owned and sticky (like /tmp): so a directory that
  another user made first on the way (`/tmp/objmount-$JOB`) is refused, and so is
  one that another user could rename away and replace;
- a symlink on the way is followed only if the user or root owns it (the rule of
  fs.protected_symlinks, which may be off); the last component is never a symlink
  made by someone else;
- a private file is opened with O_NOFOLLOW, created 0600, and refused if it is not
  a regular file of the user's.

Failures are ConfigErrors: one line that names the path, the reason and the fix.
Every function blocks on the filesystem (a few stat calls).
"""

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from objmount.errors import ConfigError

# Symlinks followed while walking one path, at most (the kernel's own limit).
MAX_SYMLINKS = 40
_WIDE = stat.S_IWGRP | stat.S_IWOTH


def private_dir(path: Path, what: str, fix: str = "") -> Path:
    """Return `path` (absolute) as a directory private to the user, creating what is missing.

    `what` names it in errors ("cache directory"), `fix` is appended to them ("choose
    another with --cache-dir"). Raises ConfigError.
    """
    uid = os.geteuid()
    existing, missing = _walk(Path(os.path.abspath(path)), uid, what, fix)
    current = existing
    for name in missing:
        current = current / name
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:  # made meanwhile: it gets the same checks
            pass
        except OSError as exc:
            raise ConfigError(_message(what, current, f"cannot be created ({exc.strerror})",
                                       fix)) from None
        _check_own_dir(current, uid, what, fix)
    if not missing:
        _check_own_dir(current, uid, what, fix)
    return current


def private_subdirs(parent: Path, names: Iterable[str], what: str, fix: str = "") -> None:
    """Create (0700) or check the directories `names` directly in `parent`, a directory
    that passed `private_dir`: each must be a directory of the user's (never a symlink)
    not writable by others; one readable by others is narrowed. Raises ConfigError."""
    uid = os.geteuid()
    for name in names:
        path = parent / name
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(_message(what, path, f"cannot be created ({exc.strerror})",
                                       fix)) from None
        _check_own_dir(path, uid, what, fix)


def open_private_file(path: Path, what: str, flags: int = os.O_WRONLY | os.O_APPEND,
                      fix: str = "") -> int:
    """Open (creating it 0600) a file of the user's; return its descriptor.

    Its directory must pass the ancestor checks of `private_dir` (it is not created).
    Refuses a symlink, a non-regular file, or a file owned by someone else. Raises
    ConfigError.
    """
    uid = os.geteuid()
    path = Path(os.path.abspath(path))
    parent, missing = _walk(path.parent, uid, what, fix)
    if missing:
        raise ConfigError(_message(what, path, f"cannot be created: {parent / missing[0]} "
                                   "does not exist", fix))
    target = parent / path.name
    try:
        fd = os.open(target, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        reason = "is a symlink (refused)" if os.path.islink(target) else exc.strerror
        raise ConfigError(_message(what, target, str(reason), fix)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(_message(what, target, "is not a regular file", fix))
        if info.st_uid != uid:
            raise ConfigError(_message(what, target, f"belongs to uid {info.st_uid}, not to "
                                       f"you (uid {uid})", fix))
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file_in(directory: Path, name: str, what: str, fix: str = "",
                    create: bool = False) -> bool:
    """Check that `name` in `directory` (which passed `private_dir`) is, if it exists, a
    regular file of the user's, never a symlink; narrow a wider mode to 0600. With
    `create`, create it (empty, 0600) if missing. Return True if it exists now.

    Never opens an existing file: closing any descriptor of a file drops the fcntl
    locks the process holds on it, which SQLite relies on for a database another
    connection of this process has open. Raises ConfigError.
    """
    path = directory / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600))
        except FileExistsError:  # made meanwhile: it gets the same checks
            pass
        except OSError as exc:
            raise ConfigError(_message(what, path, f"cannot be created ({exc.strerror})",
                                       fix)) from None
        info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(_message(what, path, "is not a regular file", fix))
    uid = os.geteuid()
    if info.st_uid != uid:
        raise ConfigError(_message(what, path, f"belongs to uid {info.st_uid}, not to you "
                                   f"(uid {uid})", fix))
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o600)
    return True


def _walk(path: Path, uid: int, what: str, fix: str) -> tuple[Path, list[str]]:
    """Check every existing component of `path` from the root; return the deepest existing
    directory (symlinks resolved) and the names still missing below it."""
    current = Path("/")
    parts = list(path.parts[1:])
    hops = 0
    while parts:
        name = parts.pop(0)
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return current, [name, *parts]
        except OSError as exc:
            raise ConfigError(_message(what, candidate, exc.strerror or str(exc), fix)) from None
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if info.st_uid not in (uid, 0):
                raise ConfigError(_message(what, candidate, f"is a symlink of uid "
                                           f"{info.st_uid}: refused", fix))
            if hops > MAX_SYMLINKS:
                raise ConfigError(_message(what, path, "has too many symlinks", fix))
            target = Path(os.path.normpath(current / os.readlink(candidate)))
            current, parts = Path("/"), [*target.parts[1:], *parts]
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigError(_message(what, candidate, "is not a directory", fix))
        if info.st_uid not in (uid, 0):
            raise ConfigError(_message(what, candidate, f"belongs to uid {info.st_uid}, not to "
                                       f"you (uid {uid}) or root", fix))
        if info.st_mode & _WIDE and not (info.st_mode & stat.S_ISVTX and info.st_uid == 0):
            raise ConfigError(_message(what, candidate, "is writable by other users", fix))
        current = candidate
    return current, []


def _check_own_dir(path: Path, uid: int, what: str, fix: str) -> None:
    """The directory itself must be the user's; wider modes of the user's own are narrowed."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(_message(what, path, "is not a directory", fix))
    if info.st_uid != uid:
        raise ConfigError(_message(what, path, f"belongs to uid {info.st_uid}, not to you "
                                   f"(uid {uid})", fix))
    if info.st_mode & _WIDE:  # others may have planted something in it already
        raise ConfigError(_message(what, path, "is writable by other users", fix))
    if stat.S_IMODE(info.st_mode) & 0o077:  # readable by others (an older objmount made it)
        os.chmod(path, 0o700)


def _message(what: str, path: Path, reason: str, fix: str) -> str:
    return f"{what}: {path} {reason}" + (f" ({fix})" if fix else "")
