"""objmount.torch.PrefetchSampler over real mounts, on every backend: a RandomSampler, and a
DistributedSampler of 2 simulated ranks (two loaders of one process, each with its own
order, which the mount merges), with 0 and 2 DataLoader workers. GETs are counted at a relay
in front of the store; every sample's bytes are checked."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from torchvision.datasets import ImageFolder

from objmount.torch import PrefetchSampler
from tests.integration.conftest import FOOD11_CONTAINER
from tests.integration.mounting import mount_stats, mounted
from tests.integration.stores import TestStore, gets_seen
from tests.servers.fault_proxy import FaultProxy

pytestmark = [
    pytest.mark.mount,
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]

CONTAINER = FOOD11_CONTAINER  # the `food11` fixture's (conftest.py)
BATCH = 8
AHEAD = 4
BATCH_TIMEOUT_S = 60


def digest_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Checked(Dataset):
    """Each sample is (its index, 1 if its file's bytes are the stored ones)."""

    def __init__(self, folder: ImageFolder, root: Path, digests: dict[str, str]) -> None:
        self.folder, self.root, self.digests = folder, root, digests

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[int, int]:
        path, _ = self.folder.samples[index]
        key = Path(path).relative_to(self.root).as_posix()
        return index, int(digest_of(path) == self.digests[key])


def samplers(kind: str, folder: ImageFolder) -> list:
    """The plain samplers of one epoch (a fresh, identical set gives the expected orders)."""
    if kind == "random":
        return [RandomSampler(folder, generator=torch.Generator().manual_seed(5))]
    ranks = [DistributedSampler(folder, num_replicas=2, rank=r, shuffle=True, seed=5)
             for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(1)
    return ranks


def epoch(loaders: list[DataLoader]) -> Iterator[tuple[int, list[int], list[int]]]:
    """The batches of all loaders, one of each in turn: (loader, indices, checks)."""
    active = [(number, iter(loader)) for number, loader in enumerate(loaders)]
    while active:
        for number, batches in list(active):
            batch = next(batches, None)
            if batch is None:
                active.remove((number, batches))
            else:
                yield number, batch[0].tolist(), batch[1].tolist()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["random", "distributed"])
def test_prefetch_sampler_fetches_each_epoch_ahead_in_its_order_and_yields_it_unchanged(
    store: TestStore, food11: dict[str, bytes], relay: tuple[FaultProxy, Path],
    tmp_path: Path, kind: str, workers: int,
) -> None:
    proxy, conf = relay
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in food11.items()}
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", conf,
                 "--order-ahead", str(AHEAD)) as mount:
        folder = ImageFolder(mount.path / "training")
        expected = [list(s) for s in samplers(kind, folder)]
        wrapped = [PrefetchSampler(s, folder) for s in samplers(kind, folder)]
        loaders = [DataLoader(Checked(folder, mount.path, digests), batch_size=BATCH,
                              sampler=s, num_workers=workers,
                              timeout=BATCH_TIMEOUT_S if workers else 0) for s in wrapped]
        read: list[list[int]] = [[] for _ in loaders]
        orders_seen = None
        for number, indices, checks in epoch(loaders):
            assert all(checks), indices
            read[number] += indices
            if orders_seen is None and number == len(loaders) - 1:  # each loader has begun
                orders_seen = mount_stats(mount)["orders"]
        counters = mount_stats(mount)
    assert read == expected  # the training order, unchanged
    assert all(s.published == 1 for s in wrapped)
    assert orders_seen == len(loaders)  # the ranks' orders, merged by the mount
    files = [Path(p).relative_to(mount.path).as_posix() for p, _ in folder.samples]
    gets = gets_seen(proxy, store, CONTAINER, files)
    assert sorted(gets) == sorted(files)  # each file once
    tolerance = 2 * BATCH * max(1, workers) * len(loaders) + AHEAD * len(loaders)
    for order in expected:
        keys = [files[i] for i in order]
        in_gets = [gets.index(key) for key in keys]
        assert all(abs(at - len(loaders) * rank) <= tolerance
                   for rank, at in enumerate(in_gets)), (kind, workers)
    assert counters["prefetch_used_files"] + counters["cache_misses"] == len(files)
    assert counters["prefetch_used_files"] >= len(files) // 2
    # Wasted prefetch under the bound (< 5% of GETs). Every file is read, once
    # (above), yet under load one file in some runs is counted unused: see the closing
    # note of issue 12 (a miscount, not a GET: none is repeated).
    assert counters["prefetch_unused_files"] * 20 < counters["gets"], counters
    assert counters["orders"] == 0, counters
