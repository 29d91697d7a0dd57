"""objmount.torch: tell objmount mounts the order of each epoch, from a PyTorch sampler.

    from objmount.torch import PrefetchSampler
    sampler = PrefetchSampler(RandomSampler(dataset), dataset)
    loader = DataLoader(dataset, sampler=sampler, num_workers=4)

PrefetchSampler wraps any sampler (RandomSampler, DistributedSampler,
BatchSampler-style samplers that yield lists of indices, custom ones). Each
time the DataLoader starts an epoch (in its main process, whatever the number
of workers), it takes that epoch's indices from the wrapped sampler, publishes
the matching file paths to the objmount mount they are on (control.py), then
yields the same indices, unchanged: the training order is never altered.

Invariants:
- paths come from `paths=` (a sequence, or a function of the index), else from
  `dataset.samples` or `dataset.imgs` (torchvision's ImageFolder and
  DatasetFolder), through torch's Subset; each directory is resolved to its
  mount once (realpath), never each file;
- only mounts the user or root made are told anything (mounts.py); paths on no
  such mount are left out; if none is on one, it warns once and only yields;
- a failure to publish (a mount gone, a refusal) warns once per kind and never
  stops training; each rank (process) publishes its own order, which the mount
  merges with the others', and which it drops when that process exits;
- at most MAX_ORDER_ITEMS items of the wrapped sampler are taken ahead at a time,
  so a sampler without end still works (each slice is published as it starts).

Importing objmount does not import torch; importing objmount.torch does.
"""

import itertools
import operator
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from torch.utils.data import Sampler, Subset
except ImportError as exc:  # pragma: no cover - exercised by the no-torch test
    raise ImportError("objmount.torch needs PyTorch (pip install torch); the rest of "
                      "objmount works without it") from exc

from objmount import control
from objmount.mounts import ObjmountMount, innermost_mount, objmount_mounts

# Sampler items taken (and published) ahead at a time: a whole epoch of up to 1M files.
MAX_ORDER_ITEMS = 1_000_000
# An order's payload at most (the protocol's bound is 256 MiB): the rest of a slice of
# very long paths is not published.
MAX_ORDER_BYTES = 200 << 20
_instances = itertools.count()

PathSource = Sequence[str | os.PathLike] | Callable[[int], str | os.PathLike]


class PrefetchSampler(Sampler):
    """A sampler that yields what `sampler` yields, and tells the mounts the order first."""

    def __init__(self, sampler: Iterable[Any], dataset: Any = None, *,
                 paths: PathSource | None = None, client: str | None = None) -> None:
        """`paths`: the file of each index (default: from `dataset`). `client`: the name
        of this order at the mount (default: unique to this process and sampler)."""
        super().__init__()
        self.sampler = sampler
        self.dataset = dataset
        self.client = client or f"{socket.gethostname()}:{os.getpid()}:{next(_instances)}"
        self._paths = paths
        self._resolved_paths: PathSource | None = None
        self._places: dict[str, tuple[str, bytes] | None] = {}  # directory -> (mount, relative)
        self._mounts: list[ObjmountMount] = []
        self._controls: dict[str, control.Control] = {}
        self._warned: set[str] = set()
        self._off = False
        self.published = 0  # orders published (tests, curiosity)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the wrapped sampler (DistributedSampler's shuffle seed)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:
        if name == "sampler":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def __iter__(self) -> Iterator[Any]:
        items = iter(self.sampler)
        while True:
            ahead = list(itertools.islice(items, MAX_ORDER_ITEMS))
            if not ahead:
                return
            self._publish(ahead)
            yield from ahead
            if len(ahead) < MAX_ORDER_ITEMS:
                return

    # Publishing.

    def _publish(self, items: list[Any]) -> None:
        if self._off:
            return
        paths = self._path_source()
        if paths is None:
            self._give_up("PrefetchSampler: no paths (the dataset has no .samples or .imgs; "
                          "pass paths=): nothing is prefetched")
            return
        self._places.clear()  # directories are placed anew each epoch (mounts come and go)
        self._mounts = objmount_mounts()
        orders: dict[str, list[bytes]] = {}
        size = 0
        for index in _indices(items):
            place = self._place(paths[index] if not callable(paths) else paths(index))
            if place is None:
                continue
            mountpoint, relative = place
            if b"\n" in relative or size + len(relative) > MAX_ORDER_BYTES:
                continue
            orders.setdefault(mountpoint, []).append(relative)
            size += len(relative) + 1
        if not orders:
            self._give_up("PrefetchSampler: none of the dataset's files is on an objmount "
                          "mount of yours: nothing is prefetched")
            return
        for mountpoint, relatives in orders.items():
            self._send(mountpoint, control.order_payload(relatives))

    def _path_source(self) -> PathSource | None:
        if self._resolved_paths is None:
            self._resolved_paths = self._paths if self._paths is not None else (
                _dataset_paths(self.dataset))
        return self._resolved_paths

    def _place(self, path: str | os.PathLike) -> tuple[str, bytes] | None:
        """(mountpoint, path relative to it) of a file; None if on no mount of ours."""
        directory, name = os.path.split(os.fsdecode(path))
        if directory not in self._places:
            self._places[directory] = _mount_place(directory, self._mounts)
        place = self._places[directory]
        if place is None or not name:
            return None
        mountpoint, relative_dir = place
        return mountpoint, relative_dir + os.fsencode(name)

    def _send(self, mountpoint: str, payload: bytes) -> None:
        for attempt in range(2):  # a mount restarted has a new socket: look it up again
            try:
                where = self._controls.get(mountpoint)
                if where is None:
                    where, _ = control.control_of(Path(mountpoint))
                    self._controls[mountpoint] = where
                control.request(where.socket_path, "order", payload, client=self.client,
                                until_exit=True)
                self.published += 1
                return
            except control.ControlError as exc:
                self._controls.pop(mountpoint, None)
                if exc.code != "unreachable" or attempt:
                    self._warn(exc.code, f"PrefetchSampler: cannot tell {mountpoint} the "
                               f"order ({exc}); training goes on without prefetch there")
                    return

    def _give_up(self, message: str) -> None:
        self._off = True
        self._warn("off", message)

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=4)


def _indices(items: list[Any]) -> Iterator[int]:
    """The dataset indices of sampler items: an index each, or a batch (list, tuple,
    tensor) of them."""
    for item in items:
        try:
            yield operator.index(item)
        except TypeError:  # a batch
            for index in item:
                yield operator.index(index)


def _dataset_paths(dataset: Any) -> Sequence[str] | None:
    """The file of each index of `dataset` (ImageFolder, DatasetFolder, a Subset of one)."""
    if isinstance(dataset, Subset):
        inner = _dataset_paths(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    for name in ("samples", "imgs"):
        samples = getattr(dataset, name, None)
        if isinstance(samples, Sequence) and (not samples or isinstance(samples[0], tuple)):
            return [path for path, *_ in samples]
    return None


def _mount_place(directory: str, mounts: list[ObjmountMount]) -> tuple[str, bytes] | None:
    """(mountpoint, directory relative to it with a trailing '/') of a directory on one of
    `mounts` that the user or root made; None otherwise. Blocks on a realpath."""
    try:
        found = innermost_mount(Path(os.path.realpath(directory or ".")), mounts)
    except OSError:
        return None
    if found is None or not found[0].trusted():
        return None
    mount, relative = found
    return mount.mountpoint, os.fsencode(relative) + b"/" if relative else b""
