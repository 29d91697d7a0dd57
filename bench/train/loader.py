"""The training side of `bench.train`: torchvision's ImageFolder and DataLoader, as a job runs them.

Every sample is read whole (one open, reads to EOF), its sha256 checked
against the data set's manifest, then decoded by Pillow and transformed as an
ImageNet-style training step does: RandomResizedCrop(224) and PILToTensor
(uint8; normalisation is the GPU's job). Decoding is part of the workload: on
2 cores it competes with the mount for CPU, as it does in training.

The sampler is a seeded RandomSampler (one generator for the whole run, so
epoch N's order is the same in every configuration); with `prefetch`, it is
wrapped in objmount.torch.PrefetchSampler(sampler, dataset), which yields the
same indices and tells the mount the order. Workers are persistent: an epoch
measures reading, not forking.
"""

import hashlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler
from torchvision import datasets, transforms

BATCH = 32
CROP_PX = 224
# A batch that takes longer than this means a hung mount, not a slow one.
BATCH_TIMEOUT_S = 300


def prefetch_sampler_class() -> type | None:
    """objmount.torch.PrefetchSampler if this objmount has it, else None."""
    try:
        from objmount.torch import PrefetchSampler
    except ImportError:
        return None
    return PrefetchSampler


class CheckedImageFolder(datasets.ImageFolder):
    """ImageFolder whose samples are (image, class, bytes read, 1 if the bytes were right)."""

    def __init__(self, root: Path, digests: dict[str, str]) -> None:
        self.digests = digests  # path relative to root -> sha256 hex
        super().__init__(str(root), transform=transforms.Compose([
            transforms.RandomResizedCrop(CROP_PX), transforms.PILToTensor()]))
        self.root_path = root

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        path, target = self.samples[index]
        with open(path, "rb") as f:
            data = f.read()
        rel = str(Path(path).relative_to(self.root_path))
        ok = int(hashlib.sha256(data).hexdigest() == self.digests.get(rel))
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return self.transform(image), target, len(data), ok


@dataclass
class EpochResult:
    images: int
    bytes: int
    bad: int
    seconds: float
    note: str = ""

    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """One DataLoader over one root, kept across epochs (persistent workers, one sampler)."""

    def __init__(self, root: Path, digests: dict[str, str], workers: int, seed: int,
                 prefetch: bool) -> None:
        warnings.filterwarnings("ignore", "This DataLoader will create")  # workers > cores
        self.dataset = CheckedImageFolder(root, digests)
        generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(self.dataset, generator=generator)
        if prefetch:
            wrapper = prefetch_sampler_class()
            if wrapper is None:
                raise RuntimeError("objmount.torch.PrefetchSampler is not in this objmount")
            sampler = wrapper(sampler, self.dataset)
        self.loader = DataLoader(self.dataset, batch_size=BATCH, sampler=sampler,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 timeout=BATCH_TIMEOUT_S if workers > 0 else 0)

    def epoch(self) -> EpochResult:
        """Read one epoch; a failed or timed-out batch ends it with a note."""
        images = nbytes = bad = 0
        started = time.perf_counter()
        try:
            for _, labels, sizes, oks in self.loader:
                images += len(labels)
                nbytes += int(sizes.sum())
                bad += int(len(oks) - oks.sum())
        except (RuntimeError, OSError) as exc:
            return EpochResult(images, nbytes, bad + 1, time.perf_counter() - started,
                               note=f"failed: {exc!r}"[:60])
        return EpochResult(images, nbytes, bad, time.perf_counter() - started)

    def close(self) -> None:
        """Stop the persistent workers (before the mount goes away)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
        self.loader = None  # type: ignore[assignment]
