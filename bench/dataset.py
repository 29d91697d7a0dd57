"""The benchmark's data set: generated deterministically, kept on local disk, uploaded once.

At --scale 1: 4 shards of 256 MiB (`shards/shard-N.bin`, read sequentially and
by random 64 KiB preads) and 5,000 files of 60-120 KiB in 10 class directories
(`images/class_NN/img_NNNNN.jpg`, the ImageFolder layout). Every byte comes
from `random.Random` seeded by the object's name, so a data set is the same on
every machine; its manifest (sizes and sha256) lives next to the local copy,
which doubles as the local-disk baseline. An upload marker in the server's data
directory names the manifest it holds, so a second run uploads nothing.

`bench.train` uses the same machinery with `images="jpeg"` and no shards: its
small files are real JPEGs (bench/jpegs.py), which its data loader decodes.
"""

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.servers import Objects

MIB = 1 << 20
KIB = 1 << 10
BUCKET = "bench"
CLASSES = 10
UPLOAD_MARKER = "bench-uploaded.json"


@dataclass(frozen=True)
class Layout:
    """Sizes and counts of one data set, derived from --scale."""

    shard_count: int
    shard_bytes: int
    small_count: int
    small_min_bytes: int
    small_max_bytes: int
    pread_count: int
    pread_bytes: int

    @classmethod
    def from_scale(cls, scale: float) -> "Layout":
        return cls(
            shard_count=4,
            shard_bytes=max(1, round(256 * scale)) * MIB,
            small_count=max(100, round(5000 * scale)),
            small_min_bytes=60 * KIB,
            small_max_bytes=120 * KIB,
            pread_count=max(200, round(2000 * scale)),
            pread_bytes=64 * KIB,
        )


@dataclass(frozen=True)
class Entry:
    """One object: key (also its path under the data root), size, sha256 hex."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Pread:
    """One random read of the pread workload, with the digest of the bytes it must return."""

    key: str
    offset: int
    size: int
    sha256: str


@dataclass
class Dataset:
    """A generated data set: its local root, objects and digest (names its upload)."""

    root: Path
    layout: Layout
    shards: list[Entry]
    smalls: list[Entry]
    digest: str

    @property
    def entries(self) -> list[Entry]:
        return self.shards + self.smalls

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def tree_entries(self) -> int:
        """Files plus directories under the root (not the root itself), as `ls -lR` lists them."""
        return len(self.entries) + (2 if self.shards else 1) + CLASSES

    def pread_plan(self) -> list[Pread]:
        """Return the random preads (same every run), with digests read from the local copy."""
        rng = random.Random("objmount-bench-preads")
        size = self.layout.pread_bytes
        plan = []
        for _ in range(self.layout.pread_count):
            shard = rng.choice(self.shards)
            offset = rng.randrange(0, shard.size - size)
            with open(self.root / shard.key, "rb") as f:
                f.seek(offset)
                digest = hashlib.sha256(f.read(size)).hexdigest()
            plan.append(Pread(shard.key, offset, size, digest))
        return plan


def _shard_key(i: int) -> str:
    return f"shards/shard-{i}.bin"


def _small_key(i: int) -> str:
    return f"images/class_{i % CLASSES:02d}/img_{i:05d}.jpg"


def _write_shard(path: Path, key: str, size: int) -> Entry:
    rng = random.Random(key)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            chunk = rng.randbytes(MIB)
            digest.update(chunk)
            f.write(chunk)
    return Entry(key, size, digest.hexdigest())


def _write_small(path: Path, key: str, layout: Layout) -> Entry:
    rng = random.Random(key)
    size = rng.randint(layout.small_min_bytes, layout.small_max_bytes)
    data = rng.randbytes(size)
    path.write_bytes(data)
    return Entry(key, size, hashlib.sha256(data).hexdigest())


def prepare(work_dir: Path, layout: Layout, images: str = "random") -> Dataset:
    """Return the data set for `layout` under `work_dir`, generating it if it is not there.

    `images`: "random" (random bytes) or "jpeg" (real JPEGs of the layout's
    sizes, generated with Pillow on two processes: a few minutes for 10,000).
    """
    name = f"s{layout.shard_bytes // MIB}m-n{layout.small_count}"
    if images == "jpeg":
        name = f"jpeg-n{layout.small_count}"
    root = work_dir / f"data-{name}"
    manifest_path = work_dir / f"data-{name}.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["layout"] == asdict(layout) and all(
            (root / e["key"]).is_file() for e in manifest["shards"] + manifest["smalls"]
        ):
            return _from_manifest(root, manifest)
    shutil.rmtree(root, ignore_errors=True)
    for c in range(CLASSES):
        (root / f"images/class_{c:02d}").mkdir(parents=True, exist_ok=True)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as pool:
        shards = list(pool.map(lambda i: _write_shard(root / _shard_key(i), _shard_key(i),
                                                      layout.shard_bytes),
                               range(layout.shard_count)))
    smalls = _write_smalls(root, layout, images)
    manifest = {"layout": asdict(layout), "shards": [asdict(e) for e in shards],
                "smalls": [asdict(e) for e in smalls]}
    manifest_path.write_text(json.dumps(manifest))
    return _from_manifest(root, manifest)


def _write_smalls(root: Path, layout: Layout, images: str) -> list[Entry]:
    keys = [_small_key(i) for i in range(layout.small_count)]
    if images == "random":
        return [_write_small(root / key, key, layout) for key in keys]
    from bench import jpegs  # Pillow and numpy: only for the training data set

    return jpegs.write_all(root, keys, layout.small_min_bytes, layout.small_max_bytes)


def _from_manifest(root: Path, manifest: dict) -> Dataset:
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    return Dataset(
        root=root, layout=Layout(**manifest["layout"]),
        shards=[Entry(**e) for e in manifest["shards"]],
        smalls=[Entry(**e) for e in manifest["smalls"]], digest=digest,
    )


def ensure_uploaded(dataset: Dataset, objects: Objects, marker_dir: Path,
                    progress: Callable[[str], None] = print) -> bool:
    """Upload the data set to `objects`' container unless the store already holds it.

    Returns True if it uploaded. The marker is written only after every PUT
    succeeded, and trusted only if the listing agrees with the manifest.
    """
    marker = marker_dir / UPLOAD_MARKER
    wanted = {e.key: e.size for e in dataset.entries}
    if (marker.exists() and json.loads(marker.read_text()).get("digest") == dataset.digest
            and objects.sizes() == wanted):
        return False
    objects.create()
    for key in objects.sizes():
        objects.delete(key)
    progress(f"bench: uploading {dataset.total_bytes / 1e6:,.0f} MB "
             f"({len(wanted):,} objects) to {objects.container}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: objects.put(e.key, dataset.root / e.key),
                      dataset.shards + dataset.smalls))
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"digest": dataset.digest}))
    return True
