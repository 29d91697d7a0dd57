"""A model of what the namespace shows for a store's keys, written apart from the
code under test, and a readdir walk that checks each directory on the way."""

from objmount.backends.base import Backend
from objmount.backends.runner import Runner
from objmount.namespace.tree import ROOT_INODE, Namespace

MAX_NAME_BYTES = 255


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def namespace(backend: Backend, clock: Clock | None = None) -> Namespace:
    """A namespace over the whole of `backend`, listings fresh for 300 s of `clock`."""
    return Namespace(backend, Runner(4, retries=0), "", 300, clock or Clock())


def can_be_name(segment: str) -> bool:
    """The model of a usable name, written apart from the code under test."""
    if segment in ("", ".", "..") or "\0" in segment:
        return False
    try:
        return len(segment.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:
        return False


def expected_tree(keys: list[str]) -> set[str]:
    """Paths the namespace must show: 'dir/' for each directory on the way to a key
    up to its first unusable segment, 'file' for each key of usable segments that is
    no directory (a directory wins over a file of the same name)."""
    dirs: set[str] = set()
    for key in keys:
        segments = key.split("/")
        for depth in range(1, len(segments)):
            if not can_be_name(segments[depth - 1]):
                break
            dirs.add("/".join(segments[:depth]) + "/")
    files = {key for key in keys
             if all(map(can_be_name, key.split("/"))) and key + "/" not in dirs}
    return dirs | files


async def walk(ns: Namespace, inode: int = ROOT_INODE, path: str = "") -> set[str]:
    """Every path under `inode` by readdir, checking each directory's names."""
    await ns.opendir(inode)
    entries = ns.dirents(inode, None, 1 << 20)
    names = [name for name, *_ in entries]
    assert len(names) == len(set(names)), f"a name listed twice in {path!r}: {names}"
    found = set()
    for name, child, size, _ in entries:
        assert can_be_name(name), f"unusable entry {name!r} in {path!r}"
        if size is None:
            found.add(f"{path}{name}/")
            found |= await walk(ns, child, f"{path}{name}/")
        else:
            found.add(path + name)
    return found
