"""PyTorch over real mounts, on every backend.

torchvision's ImageFolder and webdataset's WebDataset read a Food-11-shaped
dataset of real JPEGs through DataLoader worker processes, as training code
does; notebooks/demo.ipynb runs headless against a mount. GETs are counted by
the mount itself (the `gets` counter of the root xattr user.objmount.stats).
"""

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import nbclient
import pytest
import torch
import webdataset
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from tests.food11_images import CLASSES, SIZE_PX, food11_images
from tests.integration.conftest import FOOD11_CONTAINER, FOOD11_PER_SPLIT
from tests.integration.demo_notebook import NOTEBOOK, assert_demo_notebook_ran, blank_notebook
from tests.integration.mounting import MountProcess, mounted
from tests.integration.stores import TestStore, put_many

pytestmark = [
    pytest.mark.mount,
    # torch suggests no more workers than cores; the 4 workers of a typical
    # training script are what these tests mean to run, on any machine.
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]

CONTAINER = FOOD11_CONTAINER  # the `food11` fixture's (conftest.py)
SHARDS = 4  # one per DataLoader worker
SAMPLES_PER_SHARD = 25
# A DataLoader batch that takes longer than this means a hung mount, not a slow one.
BATCH_TIMEOUT_S = 60


def stats(mount: MountProcess) -> dict[str, int]:
    return json.loads(os.getxattr(mount.path, "user.objmount.stats"))


def pixels(jpeg: bytes) -> torch.Tensor:
    return pil_to_tensor(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def shard(samples: dict[str, tuple[bytes, int]]) -> bytes:
    """Return a WebDataset tar shard: `{key}.jpg` and `{key}.cls` for every sample."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for key, (jpeg, label) in samples.items():
            for name, content in ((f"{key}.jpg", jpeg), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture(scope="module")
def shard_samples(store: TestStore) -> dict[str, tuple[bytes, int]]:
    """Container `food11-shards`: SHARDS tar shards; returns sample key -> (JPEG, label)."""
    images = food11_images({"training": SHARDS * SAMPLES_PER_SHARD // CLASSES + 1})
    samples = {
        f"sample_{i:04d}": (jpeg, int(Path(path).name.split("_")[0]))
        for i, (path, jpeg) in enumerate(sorted(images.items())[: SHARDS * SAMPLES_PER_SHARD])
    }
    keys = sorted(samples)
    store.create_container("food11-shards")
    put_many(store, "food11-shards", {
        f"shards/train-{n:06d}.tar": shard(
            {key: samples[key] for key in keys[n * SAMPLES_PER_SHARD:(n + 1) * SAMPLES_PER_SHARD]}
        )
        for n in range(SHARDS)
    })
    return samples


@pytest.fixture
def food11_mount(food11: dict[str, bytes], config: Path, tmp_path: Path
                 ) -> Iterator[MountProcess]:
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config) as mount:
        yield mount


class Indexed(Dataset):
    """An ImageFolder whose samples also carry their index, to check each one's path."""

    def __init__(self, folder: ImageFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, target = self.folder[index]
        return image, target, index


def run_epoch(folder: ImageFolder, food11: dict[str, bytes], root: Path) -> list[int]:
    """Read every sample once with 4 shuffling workers; check each; return the order read."""
    loader = DataLoader(Indexed(folder), batch_size=16, shuffle=True, num_workers=4,
                        timeout=BATCH_TIMEOUT_S)
    order = []
    for images, targets, indices in loader:
        for image, target, index in zip(images, targets.tolist(), indices.tolist(), strict=True):
            path, _ = folder.samples[index]
            key = Path(path).relative_to(root).as_posix()
            assert torch.equal(image, pixels(food11[key])), key
            assert folder.classes[target] == Path(path).parent.name
            order.append(index)
    assert sorted(order) == list(range(len(folder)))
    return order


def test_image_folder_classes_follow_the_directory_layout(
    food11: dict[str, bytes], food11_mount: MountProcess
) -> None:
    folder = ImageFolder(food11_mount.path / "training")
    assert folder.class_to_idx == {f"class_{i:02d}": i for i in range(CLASSES)}
    paths = {Path(path).relative_to(food11_mount.path).as_posix() for path, _ in folder.samples}
    assert paths == {key for key in food11 if key.startswith("training/")}
    for path, target in folder.samples:
        assert int(Path(path).name.split("_")[0]) == target  # Food-11's {class}_{n}.jpg


def test_image_folder_two_shuffled_epochs_decode_every_image_the_second_without_gets(
    food11: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    args = ("--cache-dir", str(cache_dir))
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        folder = ImageFolder(mount.path / "training", transform=pil_to_tensor)
        first = run_epoch(folder, food11, mount.path)
        cold = stats(mount)
        second = run_epoch(folder, food11, mount.path)
        warm = stats(mount)
    assert cold["gets"] >= len(folder)
    assert warm["gets"] == cold["gets"]
    assert first != second and first != sorted(first)
    # The kernel's page cache served part of that; a new mount starts without it,
    # and reads from objmount's block cache on disk.
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt2", config, *args) as mount:
        folder = ImageFolder(mount.path / "training", transform=pil_to_tensor)
        run_epoch(folder, food11, mount.path)
        remounted = stats(mount)
    assert remounted["gets"] == 0
    assert remounted["cache_hits"] >= len(folder)


def test_webdataset_reads_every_sample_of_tar_shards(
    shard_samples: dict[str, tuple[bytes, int]], config: Path, tmp_path: Path
) -> None:
    with mounted("remote:food11-shards", tmp_path / "mnt", config) as mount:
        urls = sorted(str(path) for path in (mount.path / "shards").glob("train-*.tar"))
        assert len(urls) == SHARDS
        dataset = (webdataset.WebDataset(urls, shardshuffle=False)
                   .decode("pil").to_tuple("__key__", "jpg", "cls"))
        loader = DataLoader(dataset, batch_size=None, num_workers=SHARDS,
                            timeout=BATCH_TIMEOUT_S)
        seen = {}
        for key, image, label in loader:
            assert image.size == (SIZE_PX, SIZE_PX)
            assert torch.equal(pil_to_tensor(image), pixels(shard_samples[key][0])), key
            seen[key] = label
    assert seen == {key: label for key, (_, label) in shard_samples.items()}


# On S3 only: the notebook is a document, not a backend behaviour, and takes half a minute
# (its kernel imports torch and trains).
@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_the_demo_notebook_runs_headless_against_a_mount(
    food11_mount: MountProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """notebooks/demo.ipynb trains, evaluates twice, and reports the cache's effect."""
    monkeypatch.setenv("OBJMOUNT_DATA", str(food11_mount.path))
    monkeypatch.setenv("OBJMOUNT_TRAIN_STEPS", "20")
    notebook = blank_notebook()
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert_demo_notebook_ran(notebook, FOOD11_PER_SPLIT["evaluation"] * CLASSES, CLASSES)
