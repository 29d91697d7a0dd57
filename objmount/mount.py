"""Mount lifecycle: check, init, serve until signalled or unmounted, close.

Order matters for fail-fast: the mountpoint, --allow-other, the cache and the
control socket's directories are checked first (no network), then the remote
with one bounded attempt, and only then is the FUSE session created. The
control channel (controlserver.py, answered by mountcontrol.py) is served beside
the FUSE session, its socket named in the root's xattr user.objmount.mount.
Whatever ends the session (SIGINT, SIGTERM, SIGHUP, an external unmount, or a
bug), the mountpoint is left unmounted, never "transport endpoint is not
connected". A dead mount left on the mountpoint by a killed process is cleared
(lazily unmounted, with one log line) only then, just before the new session:
its users see ENOTCONN until the mount is back, not an empty directory while
the remote is checked.
"""

import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio

from objmount.backends import Timeouts, open_backend
from objmount.backends.base import Backend
from objmount.backends.runner import Runner
from objmount.cache.blocks import check_cache_dir
from objmount.cache.cached_readpath import open_cached_read_path
from objmount.cache.settings import CacheOptions, default_cache_dir, source_for
from objmount.config import Target
from objmount.control import VERSION as CONTROL_VERSION
from objmount.controlserver import ControlServer, control_socket_path
from objmount.fs import AttrSettings, ReadOnlyOperations
from objmount.heap import release_large_buffers
from objmount.inflight import InFlight
from objmount.mountcontrol import MountControl
from objmount.mountpoint import (
    check_allow_other,
    check_mountpoint,
    clear_dead_mount,
    raise_readahead,
    unmount,
)
from objmount.namespace import snapshot
from objmount.namespace.tree import Freshness, Namespace
from objmount.readpath_base import DirectReadPath, ReadPath

log = logging.getLogger(__name__)

# Largest read the kernel sends to FUSE (its max_pages limit, 256 pages); the
# default readahead of 128 KiB would split every large read into 8 requests.
READAHEAD_KIB = 1024
SERVING_WAIT_S = 10.0  # a signal waits at most this long for the session to serve


@dataclass(frozen=True)
class MountOptions:
    """Everything `objmount mount` needs beyond the target."""

    mountpoint: Path
    allow_other: bool = False
    uid: int = 0
    gid: int = 0
    umask: int = 0o022
    attr_timeout_s: float = 60.0
    entry_timeout_s: float = 60.0
    dir_cache_time_s: float = 300.0
    # How long a listing inherited from a snapshot is trusted (None: dir_cache_time_s);
    # immutable: forever (until `objmount cache clear`).
    snapshot_ttl_s: float | None = None
    immutable: bool = False
    fast_list: bool = False
    # The rclone.conf remotes were read from (None: none, or from the environment only).
    config_path: Path | None = None
    max_parallel: int = 16
    retries: int = 3
    timeouts: Timeouts = field(default_factory=Timeouts)
    # The block cache; None reads every range straight from the store (--cache-mode off).
    cache: CacheOptions | None = field(
        default_factory=lambda: CacheOptions(cache_dir=default_cache_dir())
    )


def fuse_options(target: Target, options: MountOptions) -> set[str]:
    """Return the mount options handed to libfuse."""
    opts = set(pyfuse3.default_options) | {
        "ro",
        "noatime",
        f"fsname=objmount:{target}".replace(",", "_"),
        "subtype=objmount",
    }
    if options.allow_other:
        opts.add("allow_other")
    return opts


def run(target: Target, options: MountOptions, on_ready: Callable[[], None],
        on_note: Callable[[str], None] = lambda _text: None) -> None:
    """Mount `target` and serve it until unmounted; `on_ready` runs once the mount is live,
    `on_note` with a line worth showing the user before (a dead mount cleared).

    Raises ObjmountError (before mounting) for every check that fails.
    """
    mountpoint = check_mountpoint(options.mountpoint)
    if options.allow_other:
        check_allow_other(os.geteuid())
    if options.cache is not None:  # before any request: a cache dir others can write is refused
        check_cache_dir(options.cache.cache_dir)
    socket_path = control_socket_path()
    release_large_buffers()
    trio.run(_serve, target, options, mountpoint, socket_path, on_ready, on_note)


async def _serve(
    target: Target, options: MountOptions, mountpoint: Path, socket_path: Path,
    on_ready: Callable[[], None], on_note: Callable[[str], None],
) -> None:
    backend = open_backend(target, options.timeouts)
    runner = Runner(options.max_parallel, options.retries,
                    deadline_s=options.timeouts.read_s)
    await runner.call_once(backend.check, target.prefix)
    namespace = await _open_namespace(target, backend, runner, options)
    try:
        await _serve_namespace(target, backend, runner, options, mountpoint, socket_path,
                               on_ready, on_note, namespace)
    except BaseException:
        with trio.CancelScope(shield=True):
            await namespace.writer.call_once(snapshot.discard, namespace.db)
        raise
    with trio.CancelScope(shield=True):
        await namespace.close()  # publishes the listing snapshot


async def _open_namespace(target: Target, backend: Backend, runner: Runner,
                          options: MountOptions) -> Namespace:
    """The namespace over this mount's working copy of the prefix's listing snapshot
    (a new one if there is none; a temporary one without a cache directory)."""
    started = time.monotonic()
    freshness = Freshness(options.dir_cache_time_s, options.snapshot_ttl_s, options.immutable)
    cache_dir = options.cache.cache_dir if options.cache is not None else None
    db, inherited = None, False
    if cache_dir is not None:
        db, inherited = await trio.to_thread.run_sync(
            snapshot.open_working_copy, cache_dir, source_for(target), target.prefix)
    namespace = Namespace(backend, runner, target.prefix, freshness=freshness, db=db,
                          inherited=inherited, cache_dir=cache_dir)
    try:
        await namespace.start()
        if inherited:
            log.info("listing snapshot found: serving it at once (ready in %.2f s), "
                     "revalidating in the background", time.monotonic() - started)
        if options.fast_list and not inherited:
            started = time.monotonic()
            count = await namespace.load_all()
            log.info("fast-list: %d objects in %.1fs", count, time.monotonic() - started)
    except BaseException:
        with trio.CancelScope(shield=True):
            await namespace.writer.call_once(snapshot.discard, namespace.db)
        raise
    return namespace


async def _serve_namespace(
    target: Target, backend: Backend, runner: Runner, options: MountOptions,
    mountpoint: Path, socket_path: Path, on_ready: Callable[[], None],
    on_note: Callable[[str], None], namespace: Namespace,
) -> None:
    attrs = AttrSettings(
        uid=options.uid,
        gid=options.gid,
        umask=options.umask,
        attr_timeout_s=options.attr_timeout_s,
        entry_timeout_s=options.entry_timeout_s,
        mount_time_ns=time.time_ns(),
    )
    read_path = await _open_read_path(target, backend, runner, options, namespace)
    in_flight = InFlight(options.timeouts.read_s)
    control = ControlServer(socket_path, MountControl(read_path).handlers)
    operations = ReadOnlyOperations(namespace, read_path, attrs,
                                    _description(target, options, socket_path),
                                    in_flight=in_flight)
    if clear_dead_mount(mountpoint):
        note = (f"{mountpoint} was a dead mount (Transport endpoint is not connected: its "
                "objmount process was killed): unmounted it lazily")
        log.warning("%s", note)
        on_note(note)
        check_mountpoint(mountpoint)
    # Signals are received from before the mount exists: a SIGTERM sent as soon as the
    # mountpoint shows up in mountinfo must unmount, not kill the process mid-mount.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        pyfuse3.init(operations, str(mountpoint), fuse_options(target, options))
        clean = False
        try:
            async with trio.open_nursery() as nursery:
                serving = trio.Event()
                nursery.start_soon(_terminate_on_signal, signals, serving)
                await nursery.start(in_flight.serve)
                await nursery.start(read_path.serve)
                await nursery.start(control.serve)
                await nursery.start(namespace.serve)
                if options.fast_list and namespace.inherited:
                    nursery.start_soon(namespace.load_all_if_expired)
                await nursery.start(operations.serve)
                nursery.start_soon(_when_serving, target, backend.describe(), mountpoint,
                                   on_ready, serving)
                await pyfuse3.main(min_tasks=4, max_tasks=max(16, 4 * options.max_parallel))
                nursery.cancel_scope.cancel()
            clean = True
        finally:
            # pyfuse3 advises against unmounting from a session that failed; the
            # session is closed first, so a lazy fusermount afterwards cannot hang.
            pyfuse3.close(unmount=clean)
            if not clean:
                unmount(mountpoint, lazy=True)
            log.info("unmounted %s", mountpoint)


async def _open_read_path(
    target: Target, backend: Backend, runner: Runner, options: MountOptions, namespace: Namespace
) -> ReadPath:
    """Return the read path: the block cache unless it is off. Raises ConfigError."""
    if options.cache is None:
        return DirectReadPath(backend, runner)
    cache = options.cache
    log.info("block cache in %s: %d MiB blocks, up to %d MiB on disk, %d MiB in memory",
             cache.cache_dir, cache.block_size_bytes >> 20, cache.max_size_bytes >> 20,
             cache.max_buffer_memory_bytes >> 20)
    return await open_cached_read_path(backend, runner, source_for(target), cache,
                                       namespace.files_in, namespace.resolve, target.prefix)


def _description(target: Target, options: MountOptions, socket_path: Path) -> bytes:
    """The root's user.objmount.mount: what `objmount warm PATH` needs, and the control
    channel's socket (no secrets)."""
    description: dict[str, object] = {
        "target": str(target),
        "config": str(options.config_path) if options.config_path else None,
        "control": str(socket_path),
        "control_version": CONTROL_VERSION,
    }
    cache = options.cache
    if cache is not None:
        description |= {
            "cache_dir": str(cache.cache_dir),
            "block_size": cache.block_size_bytes,
            "cache_max_size": cache.max_size_bytes,
        }
    return json.dumps(description).encode()


async def _when_serving(
    target: Target, where: str, mountpoint: Path, on_ready: Callable[[], None],
    serving: trio.Event,
) -> None:
    """Once the kernel's INIT is answered, raise readahead and report the mount as live.

    The stat is a FUSE request served by this process, so it runs in a thread
    and returns only once the session serves requests; readahead set earlier
    would be clamped back to 128 KiB by the INIT reply. A signal before that
    ends the session while the stat waits on it: the thread is abandoned (the
    unmount that follows ends its stat), or the mount could never exit.
    """
    await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    serving.set()
    readahead = raise_readahead(mountpoint, READAHEAD_KIB)
    log.info("mounted %s (%s) on %s; kernel readahead %s KiB", target, where, mountpoint, readahead)
    on_ready()


async def _terminate_on_signal(signals: AsyncIterator[int], serving: trio.Event) -> None:
    """End the session on the first signal, once the kernel's INIT is answered.

    Ending it before would leave _when_serving's stat unanswered: the unmount
    would then find the mount busy. The wait is bounded, for a kernel that never
    sends INIT.
    """
    async for signum in signals:
        log.info("%s received: unmounting", signal.Signals(signum).name)
        with trio.move_on_after(SERVING_WAIT_S):
            await serving.wait()
        pyfuse3.terminate()
        return
