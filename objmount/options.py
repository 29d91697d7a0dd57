"""Command-line options shared by several commands, declared once (typer Annotated aliases)."""

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="rclone-style config file. Default: $RCLONE_CONFIG, else "
        "~/.config/rclone/rclone.conf. OBJMOUNT_CONFIG_<REMOTE>_<KEY> variables override it.",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    int,
    typer.Option("-v", "--verbose", count=True, help="More logging: -v info, -vv debug, -vvv "
                 "also the SDKs' requests (keys, tokens and passwords masked)."),
]
LogFileOpt = Annotated[
    Path | None,
    typer.Option("--log-file", help="Write logs to this file instead of stderr (appended to; "
                 "created 0600; a symlink or another user's file is refused)."),
]
