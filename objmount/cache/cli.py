"""`objmount warm` and `objmount cache stats|clear|verify`, and the mount's cache options.

Parses and validates, then calls warmup.py or tools.py. The cache options are
declared once here (Annotated aliases) and used by `mount` in objmount/cli.py
and by `warm`, so both name blocks the same way; `cache_options` turns their
text into a CacheOptions. Failures are ObjmountErrors (one line, exit code).
"""

import sys
from pathlib import Path
from typing import Annotated

import typer

from objmount import log as logsetup
from objmount.backends import Timeouts, open_backend
from objmount.cache import settings, tools
from objmount.cache.blocks import open_store
from objmount.cache.settings import CacheOptions, default_cache_dir, source_for
from objmount.config import load_remotes, parse_target
from objmount.errors import ConfigError, ObjmountError
from objmount.options import ConfigOpt, VerboseOpt
from objmount.units import parse_size_bytes

MiB = 1 << 20
MIN_BLOCK_SIZE = 64 << 10
MAX_BLOCK_SIZE = 1 << 30

def size_text(value: int) -> str:
    """Return bytes as the shortest size text that parses back exactly (10G, 8M, 4096)."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)


# Defaults as the user would type them (the values live in settings.py).
MAX_SIZE_DEFAULT = size_text(settings.DEFAULT_MAX_SIZE)
CACHE_MEM_DEFAULT = size_text(settings.DEFAULT_CACHE_MEM)
BLOCK_SIZE_DEFAULT = size_text(settings.DEFAULT_BLOCK_SIZE)
READ_AHEAD_DEFAULT = size_text(settings.DEFAULT_READ_AHEAD)
MAX_BUFFER_MEMORY_DEFAULT = size_text(settings.DEFAULT_MAX_BUFFER_MEMORY)
DIR_READ_AHEAD_DEFAULT = size_text(settings.DEFAULT_DIR_READ_AHEAD)


cache_app = typer.Typer(
    help="Inspect and manage the block cache: stats, clear, verify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

CacheModeOpt = Annotated[
    str,
    typer.Option("--cache-mode", help="'full': blocks cached on local disk and in memory, with "
                 "read-ahead; 'off': every read is a ranged GET (rclone's mode names)."),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Where cached blocks live, private to you (made 0700; "
                 "refused if another user owns it or may write it); your mounts and `warm` may "
                 "share one. Default: $XDG_CACHE_HOME/objmount, else ~/.cache/objmount.",
                 show_default=False),
]
CacheMaxSizeOpt = Annotated[
    str,
    typer.Option("--cache-max-size", help="Disk space for the cache, its index included "
                 "(~1.7M when empty); least recently used blocks are evicted beyond it (e.g. "
                 "512M, 10G)."),
]
CacheMemOpt = Annotated[
    str,
    typer.Option("--cache-mem", help="Memory for the hot tier: recently read blocks "
                 "(within --max-buffer-memory)."),
]
BlockSizeOpt = Annotated[
    str,
    typer.Option("--block-size", help="Unit of fetching and caching; smaller objects are one "
                 "block, fetched whole at open. `warm` must use the mount's value."),
]
ReadAheadOpt = Annotated[
    str,
    typer.Option("--read-ahead", help="Largest read-ahead window of a sequentially read file "
                 "(it grows from 1M as reads stay sequential; 0 turns read-ahead off)."),
]
DirReadAheadOpt = Annotated[
    str,
    typer.Option("--dir-read-ahead", help="Once two uncached files of one directory are "
                 "opened, fetch its other small (one-block) files into the cache, up to this "
                 "much ahead of the opens (ImageFolder-style reading; 0 turns it off)."),
]
OrderAheadOpt = Annotated[
    int,
    typer.Option("--order-ahead", min=0, help="GETs in flight ahead of the readers of a "
                 "published order (objmount.torch.PrefetchSampler, `objmount prefetch`), "
                 "within --max-parallel; 0 turns order prefetch off."),
]
MaxBufferMemoryOpt = Annotated[
    str,
    typer.Option("--max-buffer-memory", help="All memory for read-ahead, the hot tier "
                 "and blocks waiting to be written, together, whatever the number of open "
                 "files; windows shrink under it, GETs wait for the writer past half of it."),
]


def is_remote_spec(text: str) -> bool:
    """Return True for REMOTE:... or :TYPE:... (rclone's rule: a colon before any slash)."""
    return ":" in text.split("/", 1)[0]


def _size(flag: str, text: str, minimum: int = 0) -> int:
    value = parse_size_bytes(text)
    if value < minimum:
        raise ConfigError(f"{flag} {text!r} is too small (at least {tools.human_bytes(minimum)})")
    return value


def cache_options(
    mode: str,
    cache_dir: Path | None,
    max_size: str,
    cache_mem: str,
    block_size: str,
    read_ahead: str,
    max_buffer_memory: str,
    dir_read_ahead: str = DIR_READ_AHEAD_DEFAULT,
    order_ahead: int = settings.DEFAULT_ORDER_AHEAD,
) -> CacheOptions | None:
    """Return the mount's cache settings, or None for --cache-mode off. Raises ConfigError."""
    if mode not in ("full", "off"):
        raise ConfigError(f"--cache-mode {mode!r}: choose 'full' or 'off'")
    block = _size("--block-size", block_size, MIN_BLOCK_SIZE)
    if block > MAX_BLOCK_SIZE:
        raise ConfigError(f"--block-size {block_size!r} is too large (at most 1G)")
    options = CacheOptions(
        cache_dir=(cache_dir or default_cache_dir()).absolute(),
        max_size_bytes=_size("--cache-max-size", max_size),
        block_size_bytes=block,
        read_ahead_bytes=_size("--read-ahead", read_ahead),
        max_buffer_memory_bytes=_size("--max-buffer-memory", max_buffer_memory),
        cache_mem_bytes=_size("--cache-mem", cache_mem),
        dir_read_ahead_bytes=_size("--dir-read-ahead", dir_read_ahead),
        order_ahead=order_ahead,
    )
    return None if mode == "off" else options


def warm_command(
    target: Annotated[
        str, typer.Argument(help="REMOTE:CONTAINER[/PREFIX], or a directory or file inside "
                            "a running objmount mount: everything under it is cached (for "
                            "a path, in the mount's cache directory, with its block size).")
    ],
    config: ConfigOpt = None,
    cache_dir: CacheDirOpt = None,
    cache_max_size: CacheMaxSizeOpt = MAX_SIZE_DEFAULT,
    block_size: BlockSizeOpt = BLOCK_SIZE_DEFAULT,
    max_size: Annotated[
        str | None,
        typer.Option("--max-size", help="Cache at most this much of the subtree (in listing "
                     "order), so the warm-up never evicts what it fetched. Default: "
                     "--cache-max-size.", show_default=False),
    ] = None,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, help="GETs in flight at once.")
    ] = 32,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Retries of a failed request.")
    ] = 3,
    verbose: VerboseOpt = 0,
) -> None:
    """Fill the block cache for REMOTE:CONTAINER[/PREFIX] or a path in a mount with parallel
    GETs (safe while a mount of the same cache directory serves reads)."""
    logsetup.setup(verbose)
    file_name = None  # set for a path to one file in a mount
    if is_remote_spec(target):
        options = cache_options("full", cache_dir, cache_max_size, "0", block_size, "0", "0")
        assert options is not None
    else:  # a path in a mount: the mount's remote, cache directory and block size
        mounted, relative = tools.mount_containing(Path(target))
        if Path(target).is_file():
            relative, _, file_name = relative.rpartition("/")
        target = "/".join(part for part in (mounted.target, relative) if part)
        config = config or (Path(mounted.config) if mounted.config else None)
        options = CacheOptions(cache_dir=Path(mounted.cache_dir),
                               max_size_bytes=mounted.cache_max_size,
                               block_size_bytes=mounted.block_size)
    limit = options.max_size_bytes
    if max_size is not None:
        limit = min(limit, _size("--max-size", max_size))
    resolved = parse_target(target, load_remotes(config), config)
    only_key = None if file_name is None else resolved.prefix + file_name
    defaults = Timeouts()
    backend = open_backend(resolved, Timeouts.for_reads(defaults.connect_s, defaults.read_s,
                                                        max_parallel))
    store = open_store(options.cache_dir, options.max_size_bytes)
    if store is None:
        raise ObjmountError(f"the cache disk is full ({options.cache_dir}): nothing to warm")
    # Imported here: trio and the read path cost ~0.2 s that no other command needs.
    import trio

    from objmount.backends.runner import Runner, local_runner
    from objmount.cache.cached_readpath import DISK_THREADS
    from objmount.cache.warmup import WarmProgress, warm

    bar = tools.ProgressBar(sys.stderr)
    progress = WarmProgress()
    try:
        trio.run(lambda: warm(
            backend, store, source_for(resolved), resolved.prefix,
            block_size=options.block_size_bytes, max_bytes=limit,
            runner=Runner(max_parallel, retries, deadline_s=defaults.read_s),
            disk_runner=local_runner(DISK_THREADS),
            progress=progress, on_progress=bar.update, only_key=only_key,
        ))
    finally:
        store.close()
    bar.update(progress, final=True)
    typer.echo(tools.warm_summary(progress), err=True)
    if progress.failed_blocks:
        raise ObjmountError(f"{progress.failed_blocks} blocks could not be fetched")


@cache_app.command("stats")
def stats_command(cache_dir: CacheDirOpt = None) -> None:
    """Show the cache's size, blocks per container, and the hit rate of running mounts."""
    typer.echo(tools.stats_report((cache_dir or default_cache_dir()).absolute()))


@cache_app.command("clear")
def clear_command(
    target: Annotated[
        str | None,
        typer.Argument(help="REMOTE:CONTAINER: clear only its blocks. Default: everything.",
                       show_default=False),
    ] = None,
    config: ConfigOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Remove cached blocks and listing snapshots (all, or one container's); clearing all
    also removes an older objmount's cache layout."""
    directory = (cache_dir or default_cache_dir()).absolute()
    source = None
    if target is not None:
        source = source_for(parse_target(target, load_remotes(config), config))
    cleared = tools.clear(directory, source)
    old = (f" and the older cache layout ({cleared.old_layout_files} files)"
           if cleared.old_layout_files else "")
    typer.echo(f"removed {cleared.blocks} blocks, {cleared.snapshots} listing snapshots{old} "
               f"from {directory}", err=True)


@cache_app.command("verify")
def verify_command(cache_dir: CacheDirOpt = None) -> None:
    """Re-check every cached block against its checksums; drop the corrupt ones."""
    directory = (cache_dir or default_cache_dir()).absolute()
    checked, dropped = tools.verify(directory)
    typer.echo(f"checked {checked} blocks in {directory}: {dropped} corrupt, dropped", err=True)
