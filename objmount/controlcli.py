"""`objmount prefetch` and `objmount stats`: the control channel from the command line.

Parses, then speaks control.py's protocol to the mount a path is in. Failures
are ObjmountErrors (one line, exit code): not an objmount mount, another user's
mount, a refused request.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from objmount import control, statsview
from objmount.errors import ObjmountError
from objmount.units import parse_duration_s

PathArg = Annotated[Path, typer.Argument(help="The mountpoint of an objmount mount (or a "
                                         "directory in it).", show_default=False)]


def prefetch_command(
    mountpoint: PathArg,
    order: Annotated[
        Path | None,
        typer.Option("--order", help="A file with one path per line, relative to MOUNTPOINT, "
                     "in the order they will be read ('-': standard input).",
                     show_default=False),
    ] = None,
    client: Annotated[
        str, typer.Option("--client", help="A name for this order: the next order of the "
                          "same name replaces it (one per training rank, say).")
    ] = "cli",
    cancel: Annotated[
        bool, typer.Option("--cancel", help="Drop the order of --client instead.")
    ] = False,
) -> None:
    """Tell a mount the order in which files will be read: it fetches them ahead, in that order
    (directory read-ahead stays off meanwhile)."""
    if (order is not None) == cancel:
        raise ObjmountError("give either --order FILE or --cancel")
    where, base = control.control_of(mountpoint)
    payload = b""
    if order is not None:
        raw = sys.stdin.buffer.read() if str(order) == "-" else _read_order(order)
        paths = [line.rstrip(b"\r") for line in raw.split(b"\n")]
        prefix = base.encode() + b"/" if base else b""
        root = os.fsencode(mountpoint.absolute()).rstrip(b"/") + b"/"
        relative = [p.removeprefix(root) if p.startswith(b"/") else p for p in paths if p]
        outside = [p for p in relative if p.startswith(b"/")]
        if outside:
            raise ObjmountError(f"{order}: {os.fsdecode(outside[0])} is not in {mountpoint} "
                                "(paths are relative to it)")
        payload = control.order_payload(prefix + p for p in relative)
        if not payload:
            raise ObjmountError(f"{order} lists no paths (--cancel drops an order)")
    reply = control.request(where.socket_path, "order", payload, client=client)
    if cancel:
        typer.echo(f"objmount: dropped the order of {client!r} on {where.mountpoint}", err=True)
    else:
        typer.echo(f"objmount: {reply['paths']:,} paths published to {where.mountpoint} "
                   f"(client {client!r})", err=True)


def _read_order(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ObjmountError(f"cannot read {path}: {exc.strerror}") from None


def stats_command(
    mountpoint: PathArg,
    watch: Annotated[bool, typer.Option("--watch", help="Print again every --interval, "
                                        "until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sample.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="The time rates are measured "
                                          "over (one sample: since the mount started if 0).")
                        ] = "1s",
) -> None:
    """Show whether training waits for data: hit rate, GETs/s and MB/s, files fetched ahead,
    resident and pinned bytes, the share of read time waiting on the store."""
    where, _ = control.control_of(mountpoint)
    seconds = parse_duration_s(interval)
    if watch and seconds <= 0:
        raise ObjmountError("--watch needs an --interval above 0")
    before = control.request(where.socket_path, "stats") if seconds > 0 else None
    try:
        while True:
            if seconds > 0:
                time.sleep(seconds)
            after = control.request(where.socket_path, "stats")
            figures = statsview.summary(before, after)
            if as_json:
                typer.echo(json.dumps({"mountpoint": where.mountpoint, **figures}))
            else:
                typer.echo(statsview.render(where.mountpoint, figures) + ("\n" if watch else ""))
            if not watch:
                return
            before = after
    except KeyboardInterrupt:  # how --watch ends
        return
