"""Command line: `objmount REMOTE:CONTAINER[/PREFIX] MOUNTPOINT` and its subcommands.

Parses and validates, then calls the layer that does the work. Every
ObjmountError ends as one line on stderr and its exit code; tracebacks are
shown only with -vv. The mount is the default command: a first argument that
is not a subcommand is read as `mount`'s.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from objmount import __version__, daemon
from objmount import log as logsetup
from objmount.backends import Timeouts
from objmount.cache import cli as cache_cli
from objmount.cache import settings as cache_settings
from objmount.config import default_config_path, load_remotes, parse_target
from objmount.errors import ConfigError, ObjmountError
from objmount.mountpoint import is_mounted, propagation_warning, unmount
from objmount.options import ConfigOpt, LogFileOpt, VerboseOpt
from objmount.supervisor import Supervisor
from objmount.units import parse_duration_s

log = logging.getLogger("objmount")

app = typer.Typer(
    help="Mount S3 and OpenStack Swift containers read-only, from your rclone.conf remotes.\n\n"
    "Usage: objmount REMOTE:CONTAINER[/PREFIX] MOUNTPOINT [OPTIONS]  (same as `objmount mount`)",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"objmount {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", is_eager=True, callback=_print_version,
                     help="Print objmount's version and exit."),
    ] = False,
) -> None:
    """Options before the command: only --version (the app's help is its own)."""


app.add_typer(cache_cli.cache_app, name="cache")
app.command("warm")(cache_cli.warm_command)

# Commands of modules nothing else imports (the ETL, the control client: a third of
# the CLI's imports): registered only for a command line that may name them, so that
# `objmount mount`, run for every mount, neither imports nor builds them.
LAZY_COMMANDS = ("etl", "prefetch", "stats")


def _add_lazy_commands() -> None:
    from objmount import controlcli
    from objmount.etl.cli import etl_app

    app.add_typer(etl_app, name="etl")
    app.command("prefetch")(controlcli.prefetch_command)
    app.command("stats")(controlcli.stats_command)


@app.command("mount")
def mount_command(
    target: Annotated[
        str,
        typer.Argument(
            help="REMOTE:CONTAINER[/PREFIX] from rclone.conf, or :s3:BUCKET / :swift:CONTAINER "
            "configured from the environment."
        ),
    ],
    mountpoint: Annotated[Path, typer.Argument(help="An existing empty directory.")],
    config: ConfigOpt = None,
    allow_other: Annotated[
        bool,
        typer.Option(
            "--allow-other",
            help="Let other users (and containers) read the mount. Non-root users need "
            "'user_allow_other' in /etc/fuse.conf.",
        ),
    ] = False,
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help="Accepted for rclone compatibility: always read-only."),
    ] = True,
    daemon_mode: Annotated[
        bool,
        typer.Option(
            "--daemon", help="Run in the background; return once the mount is live (exit 0)."
        ),
    ] = False,
    daemon_timeout: Annotated[
        str, typer.Option("--daemon-wait", help="With --daemon: how long to wait for the mount.")
    ] = "120s",
    restart: Annotated[
        int,
        typer.Option(
            "--restart", min=0,
            help="Mount again after the serving process dies (killed, out of memory), at "
            "most this many times, with backoff (1s doubling to 30s); the cache is kept.",
        ),
    ] = 0,
    uid: Annotated[
        int | None,
        typer.Option("--uid", help="Owner of every file. Default: your uid.", show_default=False),
    ] = None,
    gid: Annotated[
        int | None,
        typer.Option("--gid", help="Group of every file. Default: your gid.", show_default=False),
    ] = None,
    umask: Annotated[
        str,
        typer.Option("--umask", help="Octal mask on the modes 0555 (dirs) and 0444 (files)."),
    ] = "022",
    dir_cache_time: Annotated[
        str, typer.Option("--dir-cache-time", help="How long a directory listing is reused; "
                          "after it, the old listing still answers while it is re-listed in "
                          "the background.")
    ] = "5m",
    snapshot_ttl: Annotated[
        str | None,
        typer.Option("--snapshot-ttl", help="How long the listing snapshot a previous mount "
                     "left in the cache directory is trusted without re-listing (on Swift: "
                     "as long as the container HEAD shows no change). Default: "
                     "--dir-cache-time.", show_default=False),
    ] = None,
    immutable: Annotated[
        bool,
        typer.Option("--immutable", help="The container never changes: listings (and the "
                     "snapshot) are trusted until `objmount cache clear`. Default: off."),
    ] = False,
    attr_timeout: Annotated[
        str, typer.Option("--attr-timeout", help="How long the kernel caches file attributes.")
    ] = "60s",
    entry_timeout: Annotated[
        str, typer.Option("--entry-timeout", help="How long the kernel caches name lookups.")
    ] = "60s",
    fast_list: Annotated[
        bool,
        typer.Option(
            "--fast-list",
            help="Load the whole tree with one recursive listing at mount time "
            "(fewer requests; for containers up to ~1M objects).",
        ),
    ] = False,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, help="Requests to the store in flight at once.")
    ] = 16,
    retries: Annotated[
        int,
        typer.Option(
            "--retries", min=0, help="Retries of a failed request (backoff 0.2s x4 each), "
            "within --timeout."
        ),
    ] = 3,
    contimeout: Annotated[
        str, typer.Option("--contimeout", help="Connect timeout of each request; a connection "
                          "bringing no data for half of it (or a body below 64 KiB per "
                          "half of it) is given up as stalled, and retried.")
    ] = "10s",
    timeout: Annotated[
        str, typer.Option("--timeout", help="Deadline of each file operation that needs the "
                          "store (read, lookup, listing), retries included: EIO after it.")
    ] = "60s",
    cache_mode: cache_cli.CacheModeOpt = "full",
    cache_dir: cache_cli.CacheDirOpt = None,
    cache_max_size: cache_cli.CacheMaxSizeOpt = cache_cli.MAX_SIZE_DEFAULT,
    cache_mem: cache_cli.CacheMemOpt = cache_cli.CACHE_MEM_DEFAULT,
    block_size: cache_cli.BlockSizeOpt = cache_cli.BLOCK_SIZE_DEFAULT,
    read_ahead: cache_cli.ReadAheadOpt = cache_cli.READ_AHEAD_DEFAULT,
    max_buffer_memory: cache_cli.MaxBufferMemoryOpt = cache_cli.MAX_BUFFER_MEMORY_DEFAULT,
    dir_read_ahead: cache_cli.DirReadAheadOpt = cache_cli.DIR_READ_AHEAD_DEFAULT,
    order_ahead: cache_cli.OrderAheadOpt = cache_settings.DEFAULT_ORDER_AHEAD,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
) -> None:
    """Mount REMOTE:CONTAINER[/PREFIX] on MOUNTPOINT, read-only (the default command)."""
    from objmount.mount import MountOptions, run

    logsetup.setup(verbose, log_file)
    try:
        umask_bits = int(umask, 8)
    except ValueError:
        raise ConfigError(f"--umask {umask!r} is not an octal number (e.g. 022)") from None
    options = MountOptions(
        mountpoint=mountpoint,
        allow_other=allow_other,
        uid=os.getuid() if uid is None else uid,
        gid=os.getgid() if gid is None else gid,
        umask=umask_bits,
        attr_timeout_s=parse_duration_s(attr_timeout),
        entry_timeout_s=parse_duration_s(entry_timeout),
        dir_cache_time_s=parse_duration_s(dir_cache_time),
        snapshot_ttl_s=None if snapshot_ttl is None else parse_duration_s(snapshot_ttl),
        immutable=immutable,
        fast_list=fast_list,
        config_path=_config_path(config),
        max_parallel=max_parallel,
        retries=retries,
        timeouts=Timeouts.for_reads(
            connect_s=parse_duration_s(contimeout),
            read_s=parse_duration_s(timeout),
            pool_size=max_parallel,
        ),
        cache=cache_cli.cache_options(
            cache_mode, cache_dir, cache_max_size, cache_mem, block_size, read_ahead,
            max_buffer_memory, dir_read_ahead, order_ahead,
        ),
    )
    if allow_other and (warning := propagation_warning(mountpoint.absolute())):
        typer.echo(f"objmount: warning: {warning}", err=True)  # the child, if any, logs it
    if daemon_mode:
        child_args = [a for a in _mount_argv() if a != "--daemon"]
        pid = daemon.start_daemon(child_args, log_file, parse_duration_s(daemon_timeout),
                                  on_note=lambda note: typer.echo(f"objmount: {note}", err=True))
        typer.echo(f"objmount: mounted {target} on {mountpoint} (pid {pid})", err=True)
        return
    resolved = parse_target(target, load_remotes(config), config)
    try:
        if restart:
            code = Supervisor(_without_option(_mount_argv(), "--restart"), restart,
                              str(mountpoint.absolute()),
                              on_ready=lambda: daemon.notify_parent(None),
                              on_note=daemon.notify_note).run()
            raise typer.Exit(code)
        run(resolved, options, on_ready=lambda: daemon.notify_parent(None),
            on_note=daemon.notify_note)
    except ObjmountError as exc:
        daemon.notify_parent(str(exc))
        raise


@app.command("umount")
def umount_command(
    mountpoint: Annotated[Path, typer.Argument(help="Where objmount (or any FUSE fs) is mounted.")],
) -> None:
    """Unmount MOUNTPOINT; if it is busy, detach it lazily (gone once the last file closes)."""
    if not is_mounted(mountpoint):
        raise ObjmountError(f"{mountpoint.absolute()} is not mounted")
    result = unmount(mountpoint)
    if result.returncode == 0:
        return
    if "busy" in result.stderr.lower():
        lazy = unmount(mountpoint, lazy=True)
        if lazy.returncode == 0:
            typer.echo(
                f"objmount: {mountpoint} is busy: detached lazily; it disappears when the "
                "last open file or shell in it closes",
                err=True,
            )
            return
        result = lazy
    raise ObjmountError(f"cannot unmount {mountpoint}: {result.stderr.strip()}")


@app.command("remotes")
def remotes_command(config: ConfigOpt = None) -> None:
    """List the configured remotes: options known to be harmless as they are, every other
    one (keys, passwords, tokens, unknown options) as ***."""
    remotes = load_remotes(config)
    if not remotes:
        typer.echo(f"no remotes configured (looked in {config or default_config_path(os.environ)}"
                   " and OBJMOUNT_CONFIG_* variables)", err=True)
        return
    for remote in remotes.values():
        typer.echo(remote.describe())


@app.command("version")
def version_command() -> None:
    """Print objmount's version (as --version does)."""
    _print_version(True)


def _config_path(config: Path | None) -> Path | None:
    """Return the rclone.conf the remotes are read from, absolute; None if there is none."""
    path = config or default_config_path(os.environ)
    return path.absolute() if path.is_file() else None


def _mount_argv() -> list[str]:
    """Return the command line as `mount ...` (the default-command form rewritten)."""
    return _with_default_command(sys.argv[1:])


def _without_option(argv: list[str], name: str) -> list[str]:
    """`argv` without the option `name` and its value (`--name V` or `--name=V`)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            kept.append(arg)
    return kept


def _with_default_command(argv: list[str]) -> list[str]:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    commands |= {group.name for group in app.registered_groups if group.name}
    commands |= set(LAZY_COMMANDS)
    if argv and argv[0] not in commands and argv[0] not in ("-h", "--help", "-V", "--version"):
        return ["mount", *argv]
    return argv


def main() -> None:
    """Console entry point: run the app, turning every ObjmountError into one line."""
    argv = _with_default_command(sys.argv[1:])
    if not argv or argv[0] not in ("mount", "umount"):
        _add_lazy_commands()
    try:
        app(args=argv, prog_name="objmount")  # usage errors: typer prints and exits 2
    except ObjmountError as exc:
        typer.echo(f"objmount: error: {logsetup.redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("objmount: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line unless -vv
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        typer.echo(f"objmount: internal error: {exc!r} (rerun with -vv for details)", err=True)
        sys.exit(70)
