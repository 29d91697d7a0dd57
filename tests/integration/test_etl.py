"""`objmount etl` against real servers, on every backend.

A synthetic Food-11 archive is served by a local HTTP server, extracted,
transformed and loaded with the CLI; what lands in the container is read back
with the store's own SDK and through a real mount.
"""

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from objmount.backends import Timeouts, open_backend
from objmount.backends.base import Backend, BackendError, Retry, call_once
from objmount.config import load_remotes, parse_target
from objmount.etl import load as etl_load
from objmount.etl.load import LoadOptions, load
from objmount.etl.manifest import MANIFEST_NAME
from objmount.etl.staging import DOWNLOAD_DIR
from tests.food11_archive import food11_files, transformed, write_zip
from tests.integration.conftest import data
from tests.integration.mounting import mounted, objmount
from tests.integration.stores import TestStore, get_many
from tests.integration.test_lifecycle import assert_one_line_error
from tests.servers.fault_proxy import FaultProxy
from tests.servers.http_server import FileServer
from tests.servers.net import free_port, wait_until

REPO = Path(__file__).parents[2]
PER_CLASS = 8  # 3 splits x 11 classes x 8 = 264 images, plus 2 strays
IMAGES = 3 * 11 * PER_CLASS
MiB = 1 << 20


def etl(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return objmount("etl", *args, **kwargs)


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the command exited 0; return its stderr (reports and summary)."""
    assert result.returncode == 0, result.stderr
    return result.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


@pytest.fixture(scope="module")
def archive_files() -> dict[str, bytes]:
    return food11_files(PER_CLASS)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, archive_files: dict[str, bytes]
        ) -> Iterator[FileServer]:
    """A local HTTP server with the archive as /food11.zip."""
    root = tmp_path_factory.mktemp("web")
    write_zip(archive_files, root / "food11.zip")
    with FileServer(root) as server:
        yield server


@dataclass
class Loaded:
    """The dataset after the three stages: staging directory, objects expected, stage reports."""

    staging: Path
    objects: dict[str, bytes]
    reports: str


@pytest.fixture(scope="module")
def food11(store: TestStore, config: Path, web: FileServer, archive_files: dict[str, bytes],
           tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """The archive extracted, transformed and loaded into container etl-food11."""
    staging = tmp_path_factory.mktemp(f"etl-{store.kind}") / "Food-11"
    reports = succeeded(etl("extract", web.url("food11.zip"), "--staging", str(staging)))
    reports += succeeded(etl("transform", "--staging", str(staging), "--layout", "food11"))
    reports += succeeded(etl("load", str(staging), "remote:etl-food11", "--config", str(config)))
    return Loaded(staging, transformed(archive_files), reports)


def test_extract_and_transform_sort_the_images_into_class_directories(food11: Loaded) -> None:
    assert tree(food11.staging) == food11.objects
    assert f"transform: moved {IMAGES} files" in food11.reports
    assert "transform: 2 files match no class" in food11.reports


def test_load_puts_every_file_byte_exact(food11: Loaded, store: TestStore) -> None:
    assert store.keys("etl-food11") == set(food11.objects) | {MANIFEST_NAME}
    assert get_many(store, "etl-food11", food11.objects) == food11.objects
    assert f"load: uploaded {len(food11.objects)} " in food11.reports


def test_the_manifest_records_every_object_with_its_md5(food11: Loaded, store: TestStore) -> None:
    manifest = json.loads(store.get("etl-food11", MANIFEST_NAME))
    recorded = {entry["key"]: (entry["size"], entry["md5"]) for entry in manifest["objects"]}
    assert recorded == {key: (len(c), md5(c)) for key, c in food11.objects.items()}


@pytest.mark.mount
def test_the_loaded_dataset_reads_back_through_a_mount(
    food11: Loaded, config: Path, tmp_path: Path
) -> None:
    keys = list(food11.objects)
    with mounted("remote:etl-food11", tmp_path / "mnt", config, "--fast-list") as mount:
        names = {p.relative_to(mount.path).as_posix() for p in mount.path.rglob("*")
                 if p.is_file()}
        with ThreadPoolExecutor(16) as pool:
            contents = list(pool.map(lambda key: (mount.path / key).read_bytes(), keys))
    assert names == set(keys) | {MANIFEST_NAME}
    assert dict(zip(keys, contents, strict=True)) == food11.objects


def test_a_rerun_uploads_nothing(food11: Loaded, config: Path) -> None:
    rerun = succeeded(etl("load", str(food11.staging), "remote:etl-food11", "--config",
                          str(config)))
    assert f"load: uploaded 0 (0.0 MiB), skipped {len(food11.objects)}, deleted 0" in rerun


def test_a_load_killed_halfway_finishes_on_rerun(
    food11: Loaded, store: TestStore, config: Path
) -> None:
    training = {k.removeprefix("training/"): v for k, v in food11.objects.items()
                if k.startswith("training/")}
    store.create_container("etl-killed")
    command = ["load", str(food11.staging / "training"), "remote:etl-killed", "--config",
               str(config)]
    one_at_a_time = ["--transfers", "1", "--checkers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "objmount", "etl", *command, *one_at_a_time],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(store.keys("etl-killed")) >= 20, 60, "20 uploads")
    finally:
        proc.kill()
        proc.wait()
    done_before = len(store.keys("etl-killed"))
    assert done_before < len(training), "the load finished before it was killed"
    rerun = succeeded(etl(*command))
    skipped = int(rerun.split("skipped ")[1].split(",")[0])
    assert skipped >= done_before - 1  # an upload in flight at the kill may land late
    assert f"uploaded {len(training) - skipped} " in rerun
    assert store.keys("etl-killed") == set(training) | {MANIFEST_NAME}
    assert get_many(store, "etl-killed", training) == training


def test_clean_deletes_objects_not_in_the_directory_and_only_under_the_prefix(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    (tmp_path / "src/sub").mkdir(parents=True)
    (tmp_path / "src/a.txt").write_bytes(b"a")
    (tmp_path / "src/sub/b.txt").write_bytes(b"b")
    store.create_container("etl-clean")
    for key in ("data/stale.txt", "data/sub/stale.txt", "other/keep.txt", "data-keep.txt"):
        store.put("etl-clean", key, b"old")
    command = ["load", str(tmp_path / "src"), "remote:etl-clean/data", "--config", str(config),
               "--clean"]
    first = succeeded(etl(*command))
    assert "uploaded 2 " in first and "deleted 2," in first
    assert store.keys("etl-clean") == {
        "data/a.txt", "data/sub/b.txt", f"data/{MANIFEST_NAME}", "other/keep.txt",
        "data-keep.txt",
    }
    assert "uploaded 0 (0.0 MiB), skipped 2, deleted 0" in succeeded(etl(*command))


def test_shard_loads_together_upload_every_file_exactly_once(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    """Three shards (as a Slurm array would run them) upload every file once between
    them, each writes its own manifest part; the merge folds the parts into the
    manifest, after which an unsharded rerun uploads nothing."""
    files = {f"c{i % 4}/f{i:03d}.bin": data(f"shard-{i}", 100 + i) for i in range(60)}
    for rel, content in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(content)
    store.create_container("etl-shards")
    with FaultProxy(store.data_port) as proxy:
        conf = tmp_path / "rclone.conf"
        conf.write_text(store.rclone_section_through("remote", proxy.url))
        command = ["load", str(tmp_path / "src"), "remote:etl-shards/data", "--config",
                   str(conf)]
        uploaded = 0
        for index in range(3):
            report = succeeded(etl(*command, "--shard", f"{index}/3"))
            uploaded += int(report.split("load: uploaded ")[1].split(" ")[0])
        assert "uploaded 0 " in succeeded(etl(*command, "--shard", "1/3"))  # resumes
        puts = Counter(e.target.split("?")[0] for e in proxy.exchanges if e.method == "PUT")
    data_puts = {path: n for path, n in puts.items()  # objects only, not the container
                 if "/etl-shards/data/" in path and "objmount-manifest" not in path}
    assert uploaded == len(files) == len(data_puts)
    assert set(data_puts.values()) == {1}  # every file exactly once
    parts = {k for k in store.keys("etl-shards") if ".part-" in k}
    assert len(parts) == 3
    entries = [json.loads(store.get("etl-shards", k))["objects"] for k in sorted(parts)]
    keys = [e["key"] for part in entries for e in part]
    assert sorted(keys) == sorted(f"data/{rel}" for rel in files)  # disjoint, complete
    # The proxy is gone: merge and rerun talk to the store directly.
    merged = succeeded(etl("load", "--merge-manifests", "remote:etl-shards/data", "--config",
                           str(config)))
    assert "merged 3 manifest parts" in merged
    assert {k for k in store.keys("etl-shards") if "objmount-manifest" in k} == {
        f"data/{MANIFEST_NAME}"}
    manifest = json.loads(store.get("etl-shards", f"data/{MANIFEST_NAME}"))["objects"]
    assert {e["key"]: e["md5"] for e in manifest} == {
        f"data/{rel}": md5(content) for rel, content in files.items()}
    rerun = [*command[:-1], str(config)]
    assert f"uploaded 0 (0.0 MiB), skipped {len(files)}" in succeeded(etl(*rerun))


def test_a_shard_out_of_range_fails_with_one_line(config: Path, tmp_path: Path) -> None:
    result = etl("load", str(tmp_path), "remote:etl-shards", "--config", str(config),
                 "--shard", "3/3")
    assert_one_line_error(result, "--shard '3/3'")


@pytest.mark.mount
def test_a_complete_load_leaves_a_listing_snapshot_the_next_mount_starts_from(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    (tmp_path / "src/d").mkdir(parents=True)
    (tmp_path / "src/d/x.txt").write_bytes(b"x")
    cache = tmp_path / "cache"
    succeeded(etl("load", str(tmp_path / "src"), "remote:etl-snapshot", "--config",
                  str(config), "--cache-dir", str(cache)))
    assert len(list((cache / "listings-v1").glob("*-*.db"))) == 1
    with mounted("remote:etl-snapshot", tmp_path / "mnt", config, "--cache-dir",
                 str(cache)) as mount:
        assert (mount.path / "d" / "x.txt").read_bytes() == b"x"
        assert (mount.path / MANIFEST_NAME).stat().st_size > 0
        assert "listing snapshot found" in mount.log()


@pytest.mark.mount
def test_a_file_above_the_segment_size_is_segmented_and_reads_back_byte_exact(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    big = data("segmented", 6 * MiB + 3)  # two segments of 5M: S3's smallest part size
    (tmp_path / "src").mkdir()
    (tmp_path / "src/big.bin").write_bytes(big)
    (tmp_path / "src/small.txt").write_bytes(b"small")
    command = ["load", str(tmp_path / "src"), "remote:etl-segments", "--config", str(config),
               "--segment-size", "5M"]
    succeeded(etl(*command))
    backend = open_backend(parse_target("remote:etl-segments", load_remotes(config)), Timeouts())
    assert backend.stat("big.bin").etag != md5(big), "not uploaded in segments"
    assert store.get("etl-segments", "big.bin") == big
    with mounted("remote:etl-segments", tmp_path / "mnt", config) as mount:
        assert (mount.path / "big.bin").read_bytes() == big
    # Its ETag is not its MD5: only the manifest can tell the rerun it is unchanged.
    assert "uploaded 0 (0.0 MiB), skipped 2" in succeeded(etl(*command))


class FlakyBackend:
    """A real backend whose put_file requests fail: a key's requests numbered in
    `transient[key]` (from 1, retries included) with a transient error, every one (not
    transient) for keys in `broken`; counts each key's requests."""

    def __init__(self, backend: Backend, transient: dict[str, set[int]] | None = None,
                 broken: frozenset[str] = frozenset()) -> None:
        self.backend = backend
        self.transient = transient or {}
        self.broken = broken
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    def put_file(self, key: str, path: Path, segment_size: int, *, retry: Retry = call_once,
                 **options: Any) -> None:
        def flaky(request: Callable[[], Any]) -> Any:
            def attempt() -> Any:
                with self.lock:
                    self.attempts[key] += 1
                    count = self.attempts[key]
                if key in self.broken:
                    raise BackendError(f"{key}: 400 InvalidRequest")
                if count in self.transient.get(key, ()):
                    raise BackendError(f"{key}: 503 SlowDown", transient=True)
                return request()

            return retry(attempt)

        self.backend.put_file(key, path, segment_size, retry=flaky, **options)


def test_transient_errors_are_retried_and_lasting_ones_listed(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    for name in ("fine", "flaky", "very-flaky", "broken"):
        (tmp_path / name).write_bytes(name.encode())
    backend = FlakyBackend(
        open_backend(parse_target("remote:etl-flaky", load_remotes(config)), Timeouts()),
        transient={"flaky": {1, 2}, "very-flaky": {1, 2, 3}}, broken=frozenset({"broken"}),
    )
    summary = load(tmp_path, backend, "", LoadOptions(retries=2, first_backoff_s=0.01))
    assert summary.uploaded == 2
    assert set(summary.failed) == {"very-flaky", "broken"}
    assert "503 SlowDown" in summary.failed["very-flaky"]
    del backend.attempts[MANIFEST_NAME]
    assert backend.attempts == {
        "fine": 1, "flaky": 3, "very-flaky": 3, "broken": 1
    }
    assert store.keys("etl-flaky") == {"fine", "flaky", MANIFEST_NAME}


def test_a_failed_segment_is_sent_again_not_the_whole_file(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    big = data("segment-retry", 6 * MiB + 3)  # two segments of 5M
    (tmp_path / "big.bin").write_bytes(big)
    options = LoadOptions(segment_size_bytes=5 * MiB, first_backoff_s=0.01)
    clean = FlakyBackend(
        open_backend(parse_target("remote:etl-parts-clean", load_remotes(config)), Timeouts()))
    load(tmp_path, clean, "", options)
    requests = clean.attempts["big.bin"]  # creation, segments, completion or manifest
    # The second request is the first segment's on both stores (the first creates the
    # upload or the segments' container).
    flaky = FlakyBackend(
        open_backend(parse_target("remote:etl-parts", load_remotes(config)), Timeouts()),
        transient={"big.bin": {2}})
    summary = load(tmp_path, flaky, "", options)
    assert summary.uploaded == 1 and not summary.failed
    assert flaky.attempts["big.bin"] == requests + 1
    assert store.get("etl-parts", "big.bin") == big


class Killed(BaseException):
    """Stands for the SIGKILL of a load: nothing after it runs, no final manifest."""


class KilledAtBackend(FlakyBackend):
    """A real backend that 'kills' the load when `key` is uploaded, once a checkpoint of
    the manifest has been written."""

    def __init__(self, backend: Backend, key: str) -> None:
        super().__init__(backend)
        self.key = key
        self.checkpointed = threading.Event()

    def put_file(self, key: str, path: Path, segment_size: int, **options: Any) -> None:
        if key == self.key:
            assert self.checkpointed.wait(30), "no checkpoint before the last upload"
            raise Killed
        super().put_file(key, path, segment_size, **options)
        if key == MANIFEST_NAME:
            self.checkpointed.set()


def test_a_load_killed_after_a_checkpoint_does_not_upload_its_segmented_file_again(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    big = data("checkpointed", 6 * MiB + 3)
    (tmp_path / "a-big.bin").write_bytes(big)
    (tmp_path / "z-last.txt").write_bytes(b"last")
    target = parse_target("remote:etl-checkpoint", load_remotes(config))
    options = LoadOptions(transfers=1, checkers=1, segment_size_bytes=5 * MiB, checkpoint_s=0)
    with pytest.raises(Killed):
        load(tmp_path, KilledAtBackend(open_backend(target, Timeouts()), "z-last.txt"), "",
             options)
    assert store.keys("etl-checkpoint") >= {"a-big.bin", MANIFEST_NAME}
    rerun = FlakyBackend(open_backend(target, Timeouts()))
    summary = load(tmp_path, rerun, "", options)
    assert (summary.uploaded, summary.skipped) == (1, 1)
    assert "a-big.bin" not in rerun.attempts
    assert store.get("etl-checkpoint", "a-big.bin") == big


def test_a_rerun_hashes_only_the_files_modified_since_the_manifest(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode())
    hashed: list[str] = []
    md5_file = etl_load.md5_file
    monkeypatch.setattr(etl_load, "md5_file", lambda path: hashed.append(path.name)
                        or md5_file(path))
    backend = open_backend(parse_target("remote:etl-mtime", load_remotes(config)), Timeouts())

    def rerun(**options: Any) -> list[str]:
        hashed.clear()
        summary = load(tmp_path, backend, "", LoadOptions(**options))
        assert summary.uploaded == 0 and summary.skipped == 3
        return sorted(hashed)

    assert load(tmp_path, backend, "", LoadOptions()).uploaded == 3
    assert rerun() == []
    stat = (tmp_path / "b").stat()
    os.utime(tmp_path / "b", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert rerun() == ["b"]
    assert rerun() == []  # the manifest now records b's new mtime
    assert rerun(checksum=True) == ["a", "b", "c"]


def test_the_food11_pipeline_file_runs_all_three_stages(
    food11: Loaded, store: TestStore, web: FileServer, tmp_path: Path
) -> None:
    conf = tmp_path / "rclone.conf"
    conf.write_text(store.rclone_section("chi_tacc"))
    result = etl("run", str(REPO / "etl/food11.toml"), "--url-env", "FOOD11_URL",
                 "--staging", str(tmp_path / "Food-11"), "--config", str(conf),
                 env={**os.environ, "CONTAINER": "etl-food11",
                      "FOOD11_URL": web.url("food11.zip") + "?X-Amz-Signature=s1gnature"})
    reports = succeeded(result)
    assert f"which holds {len(food11.objects)} files" in reports
    assert "s1gnature" not in reports
    assert f"transform: moved {IMAGES} files" in reports
    # The same dataset is in etl-food11 already (the food11 fixture): nothing to upload.
    assert f"load: uploaded 0 (0.0 MiB), skipped {len(food11.objects)}, deleted 0" in reports
    assert tree(tmp_path / "Food-11") == food11.objects


def test_run_loads_the_splits_an_archive_wraps_in_one_directory(
    store: TestStore, web: FileServer, archive_files: dict[str, bytes], tmp_path: Path
) -> None:
    write_zip({f"Food-11/{path}": data for path, data in archive_files.items()},
              web.root / "wrapped.zip")
    conf = tmp_path / "rclone.conf"
    conf.write_text(store.rclone_section("chi_tacc"))
    staging = tmp_path / "Food-11"
    result = etl("run", str(REPO / "etl/food11.toml"), "--url", web.url("wrapped.zip"),
                 "--staging", str(staging), "--config", str(conf),
                 env={**os.environ, "CONTAINER": "etl-wrapped"})
    reports = succeeded(result)
    assert f"transform: using {staging / 'Food-11'}: the archive wraps" in reports
    assert f"transform: moved {IMAGES} files" in reports
    objects = transformed(archive_files)  # at the container's top level, as unwrapped
    assert store.keys("etl-wrapped") == set(objects) | {MANIFEST_NAME}
    assert get_many(store, "etl-wrapped", objects) == objects


def test_an_interrupted_download_resumes_with_a_range_request(
    web: FileServer, archive_files: dict[str, bytes], tmp_path: Path
) -> None:
    archive = (web.root / "food11.zip").read_bytes()
    half = len(archive) // 2
    command = ["extract", web.url("food11.zip"), "--staging", str(tmp_path),
               "--sha256", hashlib.sha256(archive).hexdigest()]
    web.cut_next_after = half
    first = etl(*command)
    assert first.returncode != 0
    assert f"stopped at {half} of {len(archive)} bytes: rerun to resume" in first.stderr
    succeeded(etl(*command))
    assert web.ranges[-1] == f"bytes={half}-"
    assert tree(tmp_path) == archive_files


def test_a_partial_download_the_server_cannot_extend_starts_over(
    web: FileServer, archive_files: dict[str, bytes], tmp_path: Path
) -> None:
    archive = (web.root / "food11.zip").read_bytes()
    (tmp_path / DOWNLOAD_DIR).mkdir(mode=0o700)
    (tmp_path / DOWNLOAD_DIR / "food11.zip.part").write_bytes(archive + b"stale tail")
    succeeded(etl("extract", web.url("food11.zip"), "--staging", str(tmp_path)))
    assert web.ranges[-2:] == [f"bytes={len(archive) + 10}-", None]
    assert tree(tmp_path) == archive_files


def test_a_zip_slip_archive_is_refused_with_nothing_written_outside(
    web: FileServer, tmp_path: Path
) -> None:
    write_zip({"training/0_1.jpg": b"fine", "../../escaped.txt": b"evil"}, web.root / "slip.zip")
    staging = tmp_path / "deep/staging"
    result = etl("extract", web.url("slip.zip"), "--staging", str(staging))
    assert "member '../../escaped.txt' climbs out with '..'" in result.stderr.splitlines()[-1]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")} == {
        "deep", "deep/staging"
    }


def test_an_unreachable_url_fails_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/food11.zip"
    result = etl("extract", url, "--staging", str(tmp_path / "staging"))
    assert_one_line_error(result, "cannot download", url, "refused")


def test_an_unreachable_presigned_url_fails_without_its_query(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/food11.zip"
    presigned = f"{url}?X-Amz-Credential=AKIA%2Fscope&X-Amz-Signature=5ecre7519"
    result = etl("extract", "--url-env", "DATA_URL", "--staging", str(tmp_path / "staging"),
                 env={**os.environ, "DATA_URL": presigned})
    assert_one_line_error(result, "cannot download", f"{url}?***", "refused")
    assert "5ecre7519" not in result.stderr and "AKIA" not in result.stderr


def test_a_user_and_password_in_the_url_authenticate_and_are_never_printed(
    web: FileServer, archive_files: dict[str, bytes], tmp_path: Path
) -> None:
    url = web.url("food11.zip").replace("//", "//reader:pa55w0rd@")
    in_argv = succeeded(etl("extract", url, "--staging", str(tmp_path / "ok"), "-vv"))
    assert "pa55w0rd" not in in_argv
    assert "process list: pass it with --url-env NAME" in in_argv
    assert web.authorizations[-1] == "Basic " + base64.b64encode(b"reader:pa55w0rd").decode()
    assert tree(tmp_path / "ok") == archive_files
    missing = etl("extract", "--staging", str(tmp_path / "no"),
                  env={**os.environ, "OBJMOUNT_ETL_URL": url.replace("food11", "absent")})
    assert_one_line_error(missing, "cannot download http://***@127.0.0.1:", "HTTP 404")
    assert "pa55w0rd" not in missing.stderr


def test_an_archive_member_named_like_the_archive_survives_and_is_counted(
    web: FileServer, tmp_path: Path
) -> None:
    write_zip({"data.zip": b"a member, not the archive", "a/b.txt": b"b"}, web.root / "data.zip")
    report = succeeded(etl("extract", web.url("data.zip"), "--staging", str(tmp_path / "s")))
    assert tree(tmp_path / "s") == {"data.zip": b"a member, not the archive", "a/b.txt": b"b"}
    assert "which holds 2 files" in report


def test_the_staging_directory_is_private_and_zip_members_keep_their_modes(
    web: FileServer, tmp_path: Path
) -> None:
    with zipfile.ZipFile(web.root / "modes.zip", "w") as zf:
        for name, mode in {"private.key": 0o600, "run.sh": 0o755, "wide.txt": 0o666}.items():
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, (stat.S_IFREG | mode) << 16
            zf.writestr(info, name)
    staging = tmp_path / "new/staging"
    succeeded(etl("extract", web.url("modes.zip"), "--staging", str(staging)))
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in tmp_path.rglob("*")}
    assert modes == {"new": 0o700, "new/staging": 0o700, "new/staging/private.key": 0o600,
                     "new/staging/run.sh": 0o755, "new/staging/wide.txt": 0o644}


def test_wrong_credentials_fail_with_one_line(
    store: TestStore, food11: Loaded, tmp_path: Path
) -> None:
    conf = tmp_path / "rclone.conf"
    secret_key = "secret_access_key" if store.kind == "s3" else "application_credential_secret"
    conf.write_text(store.rclone_section("bad", **{secret_key: "Xwrong-secret-value"}))
    result = etl("load", str(food11.staging), "bad:etl-food11", "--config", str(conf))
    assert_one_line_error(result)
    assert "Xwrong-secret-value" not in result.stderr
    assert any(word in result.stderr.lower() for word in ("denied", "credential", "auth"))


def test_a_pipeline_without_its_container_variable_fails_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER"}
    result = etl("run", str(REPO / "etl/food11.toml"), env=env)
    assert_one_line_error(result, "set CONTAINER")


def test_a_missing_staging_directory_fails_with_one_line(tmp_path: Path) -> None:
    result = etl("transform", "--staging", str(tmp_path / "absent"))
    assert_one_line_error(result, "staging directory", "does not exist")
