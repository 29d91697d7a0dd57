"""`objmount etl`: the extract, transform and load commands, and `run` for all three.

Parses and validates, calls the stage, prints its report on stderr. Failures
are ObjmountErrors, which objmount.cli.main prints as one line. `run` resolves
the layout and the target before downloading anything, so a typo fails at once.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from objmount import log as logsetup
from objmount.backends import Timeouts, open_backend
from objmount.backends.base import SEGMENT_STREAMS
from objmount.config import Target, load_remotes, parse_target
from objmount.errors import EtlError
from objmount.etl.extract import extract
from objmount.etl.load import LoadOptions, MiB, load
from objmount.etl.pipeline import expand_target, read_pipeline
from objmount.etl.transform import Layout, TransformReport, resolve_layout, transform
from objmount.options import ConfigOpt, VerboseOpt
from objmount.units import parse_size_bytes

etl_app = typer.Typer(
    help="Get a dataset into a container: download and unpack it (extract), reshape it "
    "(transform), upload it in parallel and resumably (load), or all three (run).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DEFAULTS = LoadOptions()

StagingOpt = Annotated[
    Path,
    typer.Option("--staging", help="Staging directory: the archive is unpacked into it, the "
                 "layout reshapes it, and it is what you load.", show_default=False),
]
LayoutOpt = Annotated[
    str,
    typer.Option("--layout", help="How to reshape the staging directory: 'food11' (class_00.. "
                 "class_10 per split) or MODULE:FUNCTION taking the directory."),
]
TransfersOpt = Annotated[
    int, typer.Option("--transfers", min=1, help="Files uploaded in parallel (as rclone's flag).")
]
CheckersOpt = Annotated[
    int,
    typer.Option("--checkers", min=1, help="Files hashed and compared with the container in "
                 "parallel (as rclone's flag)."),
]
SegmentSizeOpt = Annotated[
    str,
    typer.Option("--segment-size", help="Files above this size are uploaded in segments of it, "
                 f"{SEGMENT_STREAMS} at a time (S3 multipart: at least 5M; Swift SLO)."),
]
CleanOpt = Annotated[
    bool,
    typer.Option("--clean", help="After uploading, delete the objects under the prefix that are "
                 "not files in DIR (safe to rerun). Default: off."),
]
ChecksumOpt = Annotated[
    bool,
    typer.Option("--checksum", help="Hash every file, even those whose size and mtime the "
                 "manifest records as loaded (as rclone's flag). Default: off."),
]
RetriesOpt = Annotated[
    int,
    typer.Option("--retries", min=0, help="Retries of a request that failed with a 5xx or a "
                 "timeout, waiting 1s, 2s, 4s..."),
]


@etl_app.command("extract")
def extract_command(
    url: Annotated[str, typer.Argument(help="HTTP(S) URL of a zip or tar(.gz) archive.")],
    staging: StagingOpt,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="Expected SHA-256 of the archive (hex). Default: not "
                     "checked.", show_default=False),
    ] = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Download URL (resuming a partial download) and unpack it into --staging."""
    logsetup.setup(verbose)
    _extract(url, staging, sha256)


@etl_app.command("transform")
def transform_command(staging: StagingOpt, layout: LayoutOpt = "food11",
                      verbose: VerboseOpt = 0) -> None:
    """Reshape --staging with a layout (idempotent); report files moved and files left."""
    logsetup.setup(verbose)
    _transform(staging, resolve_layout(layout))


@etl_app.command("load")
def load_command(
    directory: Annotated[Path, typer.Argument(help="Local directory to upload.")],
    target: Annotated[
        str, typer.Argument(help="REMOTE:CONTAINER[/PREFIX]; the container is created if missing.")
    ],
    config: ConfigOpt = None,
    transfers: TransfersOpt = _DEFAULTS.transfers,
    checkers: CheckersOpt = _DEFAULTS.checkers,
    segment_size: SegmentSizeOpt = f"{_DEFAULTS.segment_size_bytes >> 20}M",
    clean: CleanOpt = False,
    checksum: ChecksumOpt = False,
    retries: RetriesOpt = _DEFAULTS.retries,
    verbose: VerboseOpt = 0,
) -> None:
    """Upload DIRECTORY into REMOTE:CONTAINER[/PREFIX], skipping files already there."""
    logsetup.setup(verbose)
    options = LoadOptions(transfers=transfers, checkers=checkers, clean=clean, retries=retries,
                          checksum=checksum, segment_size_bytes=parse_size_bytes(segment_size))
    _load(directory, parse_target(target, load_remotes(config), config), options)


@etl_app.command("run")
def run_command(
    pipeline_file: Annotated[Path, typer.Argument(help="Pipeline file, e.g. etl/food11.toml.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Download this URL instead of the file's.",
                                 show_default=False),
    ] = None,
    staging: Annotated[
        Path | None, typer.Option("--staging", help="Use this staging directory instead of the "
                                  "file's.", show_default=False),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Load into this REMOTE:CONTAINER[/PREFIX] "
                                 "instead of the file's.", show_default=False),
    ] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Run extract, transform and load as a pipeline file describes them.

    Loads the directory the layout used: the staging directory, or the one
    directory the archive wrapped its content in.
    """
    logsetup.setup(verbose)
    pipeline = read_pipeline(pipeline_file)
    layout = resolve_layout(pipeline.layout, pipeline.directory)
    spec = target or expand_target(pipeline.target, os.environ)
    resolved = parse_target(spec, load_remotes(config), config)
    staging = staging or pipeline.staging
    _extract(url or pipeline.url, staging, pipeline.sha256)
    report = _transform(staging, layout)
    _load(report.root or staging, resolved, pipeline.load)


def _extract(url: str, staging: Path, sha256: str | None) -> None:
    report = extract(url, staging, sha256)
    _say(f"extract: unpacked {report.files} files into {staging} "
         f"({report.downloaded_bytes / MiB:.1f} MiB downloaded)")


def _transform(staging: Path, layout: Layout) -> TransformReport:
    report = transform(staging, layout)
    for line in report.describe():
        _say(f"transform: {line}")
    return report


def _load(directory: Path, target: Target, options: LoadOptions) -> None:
    # Each transfer may upload SEGMENT_STREAMS segments at once: one connection each.
    backend = open_backend(target, Timeouts(pool_size=options.transfers * SEGMENT_STREAMS))
    summary = load(directory, backend, target.prefix, options)
    for key, why in sorted(summary.failed.items()):
        _say(f"load: failed: {key}: {why}")
    _say(f"load: {summary.describe()}")
    if summary.failed:
        raise EtlError(f"{len(summary.failed)} objects failed to load into {target} "
                       "(listed above); rerun to retry them")


def _say(line: str) -> None:
    typer.echo(logsetup.redact(line), err=True)
