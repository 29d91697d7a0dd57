"""`objmount etl`: the extract, transform and load commands, and `run` for all three.

Parses and validates, calls the stage, prints its report on stderr. Failures
are ObjmountErrors, which objmount.cli.main prints as one line. `run` resolves
the layout and the target before downloading anything, so a typo fails at once.
A download URL may come from the environment (--url-env, OBJMOUNT_ETL_URL, or
`${NAME}` in a pipeline file) rather than argv, which every local user can read.
"""

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from objmount import log as logsetup
from objmount.backends import Timeouts, open_backend
from objmount.backends.base import SEGMENT_STREAMS, ListPage, ObjectInfo
from objmount.cache.blocks import check_cache_dir
from objmount.cache.cli import CacheDirOpt
from objmount.cache.settings import default_cache_dir, source_for
from objmount.config import Target, load_remotes, parse_target
from objmount.errors import ConfigError, EtlError, ObjmountError
from objmount.etl.extract import extract
from objmount.etl.load import LoadOptions, MiB, Shard, load, merge_manifests
from objmount.etl.pipeline import expand_variables, read_pipeline
from objmount.etl.transform import Layout, TransformReport, resolve_layout, transform
from objmount.log import redact_url
from objmount.namespace import snapshot
from objmount.options import ConfigOpt, VerboseOpt
from objmount.units import parse_size_bytes

log = logging.getLogger(__name__)

# Where `etl extract` reads its URL when none is given.
URL_ENV_DEFAULT = "OBJMOUNT_ETL_URL"

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
UrlEnvOpt = Annotated[
    str | None,
    typer.Option("--url-env", metavar="NAME", help="Read the download URL from environment "
                 "variable NAME: a URL given on the command line (a presigned one, or one with "
                 "user:password@) is visible to every local user in the process list.",
                 show_default=False),
]
RetriesOpt = Annotated[
    int,
    typer.Option("--retries", min=0, help="Retries of a request that failed with a 5xx or a "
                 "timeout, waiting 1s, 2s, 4s..."),
]


@etl_app.command("extract")
def extract_command(
    staging: StagingOpt,
    url: Annotated[
        str | None,
        typer.Argument(help=f"HTTP(S) URL of a zip or tar(.gz) archive. Default: --url-env's "
                       f"variable, else ${URL_ENV_DEFAULT}.", show_default=False),
    ] = None,
    url_env: UrlEnvOpt = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="Expected SHA-256 of the archive (hex). Default: not "
                     "checked.", show_default=False),
    ] = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Download URL (resuming a partial download) and unpack it into --staging (made 0700)."""
    logsetup.setup(verbose)
    _extract(download_url(url, url_env, os.environ.get(URL_ENV_DEFAULT), os.environ),
             staging, sha256)


@etl_app.command("transform")
def transform_command(staging: StagingOpt, layout: LayoutOpt = "food11",
                      verbose: VerboseOpt = 0) -> None:
    """Reshape --staging with a layout (idempotent); report files moved and files left."""
    logsetup.setup(verbose)
    _transform(staging, resolve_layout(layout))


@etl_app.command("load")
def load_command(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Local directory to upload (none with --merge-manifests).",
                       show_default=False),
    ] = None,
    target: Annotated[
        str | None,
        typer.Argument(help="REMOTE:CONTAINER[/PREFIX]; the container is created if missing.",
                       show_default=False),
    ] = None,
    config: ConfigOpt = None,
    transfers: TransfersOpt = _DEFAULTS.transfers,
    checkers: CheckersOpt = _DEFAULTS.checkers,
    segment_size: SegmentSizeOpt = f"{_DEFAULTS.segment_size_bytes >> 20}M",
    clean: CleanOpt = False,
    checksum: ChecksumOpt = False,
    retries: RetriesOpt = _DEFAULTS.retries,
    shard: Annotated[
        str | None,
        typer.Option("--shard", metavar="I/N", help="Load only shard I of N (0 <= I < N): the "
                     "files whose key hashes to I, the same split on every host; its "
                     "entries go to a manifest part. For Slurm arrays: --shard "
                     "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.", show_default=False),
    ] = None,
    merge_manifests: Annotated[
        bool,
        typer.Option("--merge-manifests", help="Upload nothing: fold the manifest parts of "
                     "sharded loads into the manifest (TARGET only). An unsharded load "
                     "merges them too. Default: off."),
    ] = False,
    cache_dir: CacheDirOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Upload DIRECTORY into REMOTE:CONTAINER[/PREFIX], skipping files already there.

    A complete load leaves the listing in --cache-dir's listing snapshots, so a mount of
    that target on this host starts from it.
    """
    logsetup.setup(verbose)
    if merge_manifests and target is None:
        directory, target = None, str(directory) if directory is not None else None
    if target is None or (directory is None and not merge_manifests):
        raise ConfigError("give DIRECTORY and REMOTE:CONTAINER[/PREFIX] (or --merge-manifests "
                          "REMOTE:CONTAINER[/PREFIX])")
    if merge_manifests and (shard or directory is not None):
        raise ConfigError("--merge-manifests takes only REMOTE:CONTAINER[/PREFIX], no "
                          "DIRECTORY or --shard")
    options = LoadOptions(transfers=transfers, checkers=checkers, clean=clean, retries=retries,
                          checksum=checksum, segment_size_bytes=parse_size_bytes(segment_size),
                          shard=parse_shard(shard) if shard else None)
    resolved = parse_target(target, load_remotes(config), config)
    _load(directory, resolved, options, (cache_dir or default_cache_dir()).absolute())


def parse_shard(text: str) -> Shard:
    """Parse --shard I/N (0 <= I < N); raises ConfigError."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise ConfigError(f"--shard {text!r}: give I/N with 0 <= I < N, e.g. 0/4")
    return Shard(int(index), int(count))


@etl_app.command("run")
def run_command(
    pipeline_file: Annotated[Path, typer.Argument(help="Pipeline file, e.g. etl/food11.toml.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Download this URL instead of the file's "
                                 "(see --url-env).", show_default=False),
    ] = None,
    url_env: UrlEnvOpt = None,
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
    spec = target or expand_variables(pipeline.target, os.environ, "load.target", "--target")
    resolved = parse_target(spec, load_remotes(config), config)
    staging = staging or pipeline.staging
    in_file = None if url or url_env else expand_variables(
        pipeline.url, os.environ, "extract.url", "--url-env")
    _extract(download_url(url, url_env, in_file, os.environ), staging, pipeline.sha256)
    report = _transform(staging, layout)
    _load(report.root or staging, resolved, pipeline.load, default_cache_dir().absolute())


def download_url(given: str | None, env_name: str | None, default: str | None,
                 env: Mapping[str, str]) -> str:
    """Return the URL to download: `given` (argv), else the variable `env_name` names,
    else `default`; raises ConfigError when there is none, or both of the first two.

    A URL with credentials in argv is used, with a warning that others can read it.
    """
    if given and env_name:
        raise ConfigError("give the URL or --url-env, not both")
    if env_name:
        value = env.get(env_name, "").strip()
        if not value:
            raise ConfigError(f"--url-env {env_name}: {env_name} is not set "
                              f"(export {env_name}=URL)")
        return value
    if given:
        if redact_url(given) != given:
            log.warning("the URL has a query string or user:password, and other local users "
                        "can read it in the process list: pass it with --url-env NAME")
        return given
    if default:
        return default
    raise ConfigError(f"no URL to download: give one, or set {URL_ENV_DEFAULT} (or a "
                      "variable named by --url-env)")


def _extract(url: str, staging: Path, sha256: str | None) -> None:
    report = extract(url, staging, sha256)
    _say(f"extract: unpacked the archive into {report.staging}, which holds {report.files} "
         f"files ({report.downloaded_bytes / MiB:.1f} MiB downloaded)")


def _transform(staging: Path, layout: Layout) -> TransformReport:
    report = transform(staging, layout)
    for line in report.describe():
        _say(f"transform: {line}")
    return report


def _load(directory: Path | None, target: Target, options: LoadOptions,
          cache_dir: Path | None = None) -> None:
    """Load `directory` (None: merge the manifest parts); leave the listing in `cache_dir`."""
    # Each transfer may upload SEGMENT_STREAMS segments at once: one connection each.
    backend = open_backend(target, Timeouts(pool_size=options.transfers * SEGMENT_STREAMS))
    on_listed = None if cache_dir is None else functools.partial(
        _write_snapshot, cache_dir, source_for(target), target.prefix)
    if directory is None:
        summary = merge_manifests(backend, target.prefix, options, on_listed)
    else:
        summary = load(directory, backend, target.prefix, options, on_listed)
    for key, why in sorted(summary.failed.items()):
        _say(f"load: failed: {key}: {why}")
    _say(f"load: {summary.describe()}")
    if summary.failed:
        raise EtlError(f"{len(summary.failed)} objects failed to load into {target} "
                       "(listed above); rerun to retry them")


def _write_snapshot(cache_dir: Path, source: str, prefix: str,
                    listed: dict[str, ObjectInfo], version: str | None) -> None:
    """The final listing as the prefix's listing snapshot; a failure is only a warning."""
    try:
        snapshot.build(check_cache_dir(cache_dir), source, prefix,
                       [ListPage(objects=sorted(listed.values(), key=lambda o: o.key))],
                       version, time.time())
    except (ObjmountError, OSError, sqlite3.Error) as exc:
        log.warning("cannot write the listing snapshot in %s (%s): a mount lists afresh",
                    cache_dir, exc)


def _say(line: str) -> None:
    typer.echo(logsetup.redact(line), err=True)
