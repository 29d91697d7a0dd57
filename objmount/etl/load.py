"""Upload a directory tree into a container: in parallel, resumable, safe to rerun.

Each regular file DIR/rel becomes the object PREFIX + rel (objmount's own
entries at the top of DIR aside: see staging.py). `checkers` threads hash the
files (MD5) and compare them with one listing of the prefix; `transfers`
threads upload what differs, a file above the segment size in
parallel segments (Backend.put_file). A transient BackendError is retried
`retries` times with doubling backoff; any other per-file error is recorded and
the run goes on, but refused credentials, a missing container or an endpoint
still unreachable after the retries stop it.

When is an object unchanged, so that a rerun uploads nothing? Its listed size
must be the file's, and either its ETag is the file's MD5 (true of every
single-part upload to S3 or Swift) or the manifest records this key with this
size, this MD5 and the ETag listed now. Segmented objects (S3 multipart, Swift
SLO) have ETags made from their segments' checksums, so only the manifest can
vouch for them: an entry binds one content to one ETag, and any rewrite of the
object changes its ETag, so a stale entry never matches. A file whose size and
mtime are those the manifest recorded, its object listed with the recorded
ETag, is not even hashed (rclone's size and modification time check;
`checksum` hashes every file).

After a run that changed anything, the manifest is rewritten with the ETags of
a fresh listing (cheaper than a HEAD per upload). A run killed before then
leaves its single-part uploads recognisable by ETag; its segmented ones are
recorded by checkpoints: at most every `checkpoint_s`, the manifest read at the
start plus the segmented files uploaded so far (each ETag from a HEAD after its
upload) is written, so a rerun uploads only the segmented files finished since
the last checkpoint.

Each request of an upload (a whole file, or one segment) is retried on its
own: a failed segment does not send the whole file again.

With `clean`, objects under the prefix that are no local file (the manifest
excepted) are deleted once the uploads are done.

Sharded (`shard`: I of N, for a Slurm array or several ETL hosts): a run loads
only the files whose key hashes to shard I (a deterministic 1/N, the same on
every host), cleans only such keys, and writes its entries as its own manifest
part (manifest.py), never the manifest: N shards together upload every file
exactly once, and `merge_manifests` (or the next unsharded run, which reads the
parts as recorded entries) folds the parts into the manifest.

An unsharded run that loaded everything, and a merge, hand their final listing
(the manifest in it) to `on_listed`: the mount's listing snapshot is built from it.
"""

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from objmount.backends.base import (
    AuthFailed,
    Backend,
    BackendError,
    ContainerNotFound,
    ObjectInfo,
    Unreachable,
    list_all,
)
from objmount.errors import EtlError
from objmount.etl.manifest import (
    Entry,
    is_manifest_key,
    is_part_key,
    manifest_key,
    md5_file,
    part_key,
    read_manifest,
    write_manifest,
)
from objmount.etl.progress import Bar, progress_bar
from objmount.etl.staging import data_files

log = logging.getLogger(__name__)
T = TypeVar("T")
MiB = 1 << 20

# Errors that would fail every other file too: they stop the run.
_FATAL = (AuthFailed, ContainerNotFound, Unreachable)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count): the keys that hash to it."""

    index: int
    count: int

    def holds(self, key: str) -> bool:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % self.count == self.index


# What a complete run hands over: its final listing by key, and the store's change
# token asked before it (None: the store has none).
Listed = Callable[[dict[str, ObjectInfo], str | None], None]


@dataclass(frozen=True)
class LoadOptions:
    """How `load` runs; transfers and checkers default to the tutorial's rclone flags."""

    transfers: int = 32
    checkers: int = 16
    segment_size_bytes: int = 64 * MiB
    clean: bool = False
    retries: int = 3
    first_backoff_s: float = 1.0
    # A killed run loses at most this long of segmented uploads; each checkpoint
    # rewrites the whole manifest, so not much more often.
    checkpoint_s: float = 60.0
    checksum: bool = False
    shard: Shard | None = None


@dataclass
class LoadSummary:
    """What a run did; `failed` maps each key that could not be uploaded or deleted to why."""

    uploaded: int = 0
    skipped: int = 0
    deleted: int = 0
    uploaded_bytes: int = 0
    seconds: float = 0.0
    merged_parts: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Return the one-line summary printed at the end of a run."""
        rate = self.uploaded_bytes / MiB / self.seconds if self.seconds else 0.0
        merged = f", merged {self.merged_parts} manifest parts" if self.merged_parts else ""
        return (f"uploaded {self.uploaded} ({self.uploaded_bytes / MiB:.1f} MiB), "
                f"skipped {self.skipped}, deleted {self.deleted}, failed {len(self.failed)}"
                f"{merged} in {self.seconds:.1f} s ({rate:.1f} MiB/s)")


@dataclass(frozen=True)
class LocalFile:
    """A file to load and the object it becomes."""

    key: str
    path: Path
    size: int
    mtime_ns: int


def local_files(directory: Path, prefix: str) -> list[LocalFile]:
    """Return every file of the dataset in `directory` (staging.data_files) with its key.

    Raises EtlError if `directory` is missing or a subdirectory cannot be read.
    """
    if not directory.is_dir():
        raise EtlError(f"directory {directory} does not exist: nothing to load")
    files = []
    for path, rel in data_files(directory):
        stat = path.stat()
        files.append(LocalFile(prefix + rel, path, stat.st_size, stat.st_mtime_ns))
    return files


def unchanged(local: Entry, listed: ObjectInfo | None, recorded: Entry | None) -> bool:
    """Return True if the listed object holds the local content (see the module docstring)."""
    if listed is None or listed.size != local.size:
        return False
    return listed.etag == local.md5 or (
        recorded is not None
        and (recorded.key, recorded.size, recorded.md5, recorded.etag)
        == (local.key, local.size, local.md5, listed.etag)
    )


def unmodified(file: LocalFile, listed: ObjectInfo | None, recorded: Entry | None) -> bool:
    """Return True if the manifest vouches for `file` without hashing it: it recorded this
    size and mtime, and the object is listed with the size and ETag it recorded."""
    return (recorded is not None and listed is not None and recorded.mtime_ns is not None
            and (recorded.size, recorded.mtime_ns) == (file.size, file.mtime_ns)
            and (listed.size, listed.etag) == (recorded.size, recorded.etag))


def load(directory: Path, backend: Backend, prefix: str, options: LoadOptions,
         on_listed: Listed | None = None) -> LoadSummary:
    """Make the container hold `directory`'s files under `prefix` (those of the shard, if
    sharded), then update the manifest (its part).

    Blocks. Creates the container if missing. Per-file failures are in the
    summary; raises EtlError for a missing directory and the backend's error
    when the container cannot be used at all.
    """
    return _Loader(backend, prefix, options, on_listed).run(directory)


def merge_manifests(backend: Backend, prefix: str, options: LoadOptions,
                    on_listed: Listed | None = None) -> LoadSummary:
    """Fold the manifest parts of sharded loads into the manifest (keeping the entries the
    store still lists unchanged) and delete the parts. Blocks; raises the backend's
    errors."""
    return _Loader(backend, prefix, options, on_listed).merge()


class _Loader:
    """One run of `load`: where it loads, how, and what it did so far."""

    def __init__(self, backend: Backend, prefix: str, options: LoadOptions,
                 on_listed: Listed | None) -> None:
        self.backend = backend
        self.prefix = prefix
        self.options = options
        self.on_listed = on_listed
        self.summary = LoadSummary()
        self._segmented: dict[str, Entry] = {}  # segmented uploads of this run, with ETags
        self._checkpoint_at = time.monotonic() + options.checkpoint_s
        shard = options.shard
        # Where this run's entries go: the manifest, or the shard's own part.
        self.manifest = (manifest_key(prefix) if shard is None
                         else part_key(prefix, shard.index, shard.count))

    def run(self, directory: Path) -> LoadSummary:
        started = time.monotonic()
        shard = self.options.shard
        files = [f for f in local_files(directory, self.prefix)
                 if shard is None or shard.holds(f.key)]
        local_keys = {f.key for f in files}
        self._retry(self.backend.create_container)
        version = self._version()
        listed = self._listing()
        recorded, written = self._recorded(listed)
        with progress_bar("upload", len(files), sum(f.size for f in files)) as bar:
            held = self._sync(files, listed, recorded, bar)
            if self.options.clean:
                self._clean([k for k in listed if k not in local_keys
                             and (shard is None or shard.holds(k))])
        if self.summary.uploaded or self.summary.deleted:
            listed = self._listing()
        entries = self._entries(held, listed, recorded, local_keys)
        parts = [k for k in listed if is_part_key(self.prefix, k)] if shard is None else []
        if entries != written or parts:
            self._write(entries, listed, parts)
        if shard is None and not self.summary.failed:
            self._hand_over(listed, version)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def merge(self) -> LoadSummary:
        started = time.monotonic()
        version = self._version()
        listed = self._listing()
        recorded, _ = self._recorded(listed)
        entries = {key: entry for key, entry in recorded.items()
                   if (info := listed.get(key)) is not None
                   and (info.size, info.etag) == (entry.size, entry.etag)}
        self._write(entries, listed, [k for k in listed if is_part_key(self.prefix, k)])
        self._hand_over(listed, version)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _recorded(self, listed: dict[str, ObjectInfo]) -> tuple[dict[str, Entry],
                                                                 dict[str, Entry]]:
        """Every entry the manifest and the parts listed record (parts override the
        manifest: they are newer), and those of the manifest this run writes."""
        main = self._retry(lambda: read_manifest(self.backend, self.prefix))
        written = main if self.manifest == manifest_key(self.prefix) else self._retry(
            lambda: read_manifest(self.backend, self.prefix, self.manifest))
        recorded = dict(main)
        for key in sorted(k for k in listed if is_part_key(self.prefix, k)):
            recorded.update(self._retry(lambda k=key: read_manifest(self.backend, self.prefix,
                                                                    k)))
        return recorded, written

    def _write(self, entries: dict[str, Entry], listed: dict[str, ObjectInfo],
               parts: list[str]) -> None:
        """Write `entries` as this run's manifest (part), then delete the merged `parts`;
        the listing learns the manifest's new ETag and forgets the parts."""
        self._retry(lambda: write_manifest(self.backend, self.prefix, entries.values(),
                                           self.options.segment_size_bytes, self.manifest))
        listed[self.manifest] = self._retry(lambda: self.backend.stat(self.manifest))
        for key in parts:
            self._retry(lambda k=key: self.backend.delete(k))
            listed.pop(key, None)
        self.summary.merged_parts += len(parts)

    def _version(self) -> str | None:
        """The store's change token before the listings, if a listing will be handed over."""
        if self.on_listed is None or self.options.shard is not None:
            return None
        return self._retry(self.backend.container_version)

    def _hand_over(self, listed: dict[str, ObjectInfo], version: str | None) -> None:
        if self.on_listed is not None:
            self.on_listed(listed, version)

    def _sync(
        self, files: list[LocalFile], listed: dict[str, ObjectInfo],
        recorded: dict[str, Entry], bar: Bar,
    ) -> list[Entry]:
        """Hash every file and upload those not held already; return the entries (ETags
        still empty) of the files the container now holds."""
        held: list[Entry] = []
        checks = ThreadPoolExecutor(self.options.checkers, "objmount-check")
        puts = ThreadPoolExecutor(self.options.transfers, "objmount-put")
        try:
            hashing = {}
            for file in files:
                entry = recorded.get(file.key)
                if (not self.options.checksum and entry is not None
                        and unmodified(file, listed.get(file.key), entry)):
                    self.summary.skipped += 1
                    bar.advance(file.size, files=1)
                    held.append(entry)
                else:
                    hashing[checks.submit(md5_file, file.path)] = file
            uploading: dict[Future[None], Entry] = {}
            for future in as_completed(hashing):
                file = hashing[future]
                try:
                    entry = Entry(file.key, file.size, future.result(), "", file.mtime_ns)
                except OSError as exc:
                    self._fail(file.key, file.size, f"cannot read {file.path}: {exc}", bar)
                    continue
                if unchanged(entry, listed.get(file.key), recorded.get(file.key)):
                    self.summary.skipped += 1
                    bar.advance(file.size, files=1)
                    held.append(entry)
                else:
                    absent = file.key not in listed
                    uploading[puts.submit(self._upload, file, entry, absent)] = entry
            for future in as_completed(uploading):
                entry = uploading[future]
                try:
                    segmented = future.result()
                except _FATAL:
                    raise
                except (BackendError, OSError) as exc:
                    self._fail(entry.key, entry.size, str(exc), bar)
                    continue
                self.summary.uploaded += 1
                self.summary.uploaded_bytes += entry.size
                bar.advance(entry.size, files=1)
                held.append(entry)
                if segmented is not None:
                    self._segmented[entry.key] = segmented
                    self._checkpoint(recorded)
        finally:
            checks.shutdown(cancel_futures=True)
            puts.shutdown(cancel_futures=True)
        return held

    def _upload(self, file: LocalFile, entry: Entry, absent: bool) -> Entry | None:
        """Upload `file`, each request retried; return its entry with its ETag if segmented."""
        segment_size = self.options.segment_size_bytes
        self.backend.put_file(file.key, file.path, segment_size, md5=entry.md5, absent=absent,
                              retry=self._retry)
        if file.size <= segment_size:
            return None
        return replace(entry, etag=self._retry(lambda: self.backend.stat(file.key)).etag)

    def _checkpoint(self, recorded: dict[str, Entry]) -> None:
        """Once `checkpoint_s` has passed, write the manifest: `recorded` plus the
        segmented uploads of this run. A failure is logged; the run goes on."""
        if time.monotonic() < self._checkpoint_at:
            return
        entries = {**recorded, **self._segmented}
        if self.options.shard is not None:  # a part holds its own files only
            entries = {k: e for k, e in entries.items() if self.options.shard.holds(k)}
        try:
            self._retry(lambda: write_manifest(self.backend, self.prefix, entries.values(),
                                               self.options.segment_size_bytes, self.manifest))
        except BackendError as exc:
            log.warning("could not checkpoint the manifest (%s): a rerun may upload "
                        "segmented files again", exc)
        self._checkpoint_at = time.monotonic() + self.options.checkpoint_s

    def _clean(self, keys: list[str]) -> None:
        """Delete `keys` (never the manifest or a part), `transfers` at a time."""
        doomed = [key for key in keys if not is_manifest_key(self.prefix, key)]
        with ThreadPoolExecutor(self.options.transfers, "objmount-delete") as pool:
            deleting = {
                pool.submit(self._retry, lambda k=key: self.backend.delete(k)): key
                for key in doomed
            }
            for future in as_completed(deleting):
                try:
                    future.result()
                except _FATAL:
                    raise
                except BackendError as exc:
                    self.summary.failed[deleting[future]] = f"delete: {exc}"
                    continue
                self.summary.deleted += 1

    def _entries(
        self, held: list[Entry], listed: dict[str, ObjectInfo], recorded: dict[str, Entry],
        local_keys: set[str],
    ) -> dict[str, Entry]:
        """Return the new manifest: held files with their listed ETags, and (unsharded) the
        recorded entries of other objects still listed unchanged (after a run without
        clean; parts of sharded runs included)."""
        entries = {}
        for entry in held:
            info = listed.get(entry.key)
            if info is not None and info.size == entry.size:
                entries[entry.key] = replace(entry, etag=info.etag)
        if self.options.shard is not None:
            return entries
        for key, entry in recorded.items():
            info = listed.get(key)
            if key not in local_keys and info is not None and info.etag == entry.etag:
                entries[key] = entry
        return entries

    def _listing(self) -> dict[str, ObjectInfo]:
        """Return every object under the prefix by key (one recursive listing, retried whole)."""
        return self._retry(
            lambda: {o.key: o for page in list_all(self.backend, self.prefix, None)
                     for o in page.objects}
        )

    def _fail(self, key: str, size: int, why: str, bar: Bar) -> None:
        self.summary.failed[key] = why
        bar.advance(size, files=1)

    def _retry(self, fn: Callable[[], T]) -> T:
        """Call `fn`; retry a transient BackendError `retries` times, backoff doubling."""
        backoff_s = self.options.first_backoff_s
        attempt = 0
        while True:
            try:
                return fn()
            except BackendError as exc:
                attempt += 1
                if not exc.transient or attempt > self.options.retries:
                    raise
                log.warning("%s (attempt %d of %d, retrying in %.1fs)",
                            exc, attempt, self.options.retries + 1, backoff_s)
            time.sleep(backoff_s)
            backoff_s *= 2
