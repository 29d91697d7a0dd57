"""A pyfuse3 filesystem whose reads never answer: `python -m tests.integration.blocking_fs MNT LOG`.

One file, `stuck` (1 MiB, opened with direct_io so that each read is a request the
caller waits for). Its read handler appends `read <pid>` to LOG and sleeps until it
is cancelled (then appends `cancelled`). libfuse runs with `debug`: it prints every
request it receives on stderr, FUSE_INTERRUPT included. test_interrupts.py uses
it to show what pyfuse3 does with an interrupted request.
"""

import errno
import os
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

FILE_INODE = pyfuse3.ROOT_INODE + 1
NAME = b"stuck"
SIZE = 1 << 20


class BlockingFs(pyfuse3.Operations):
    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = log
        self.reads: dict[int, int] = {}  # fh -> pid of the opener

    def note(self, line: str) -> None:
        with self.log.open("a") as file:
            file.write(line + "\n")

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            entry.st_mode, entry.st_size = stat.S_IFDIR | 0o555, 0
        else:
            entry.st_mode, entry.st_size = stat.S_IFREG | 0o444, SIZE
        return entry

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(inode)

    async def lookup(self, parent: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if parent != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(FILE_INODE)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self.reads[inode] = ctx.pid
        return pyfuse3.FileInfo(fh=inode, direct_io=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.note(f"read {self.reads.get(fh, 0)}")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.note("cancelled")
            raise
        return b""


async def main(mountpoint: str, log: Path) -> None:
    options = set(pyfuse3.default_options) | {"fsname=blocking", "debug"}
    pyfuse3.init(BlockingFs(log), mountpoint, options)
    try:
        async with trio.open_nursery() as nursery:

            async def stop_on_sigterm() -> None:
                with trio.open_signal_receiver(15) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(stop_on_sigterm)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main, sys.argv[1], Path(sys.argv[2]))
