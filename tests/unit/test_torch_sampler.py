"""objmount.torch.PrefetchSampler without a mount: what it yields (always the wrapped sampler's
items), what it would publish (control.request recorded), and objmount without torch."""

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, Subset

from objmount import control
from objmount import torch as objmount_torch
from objmount.mounts import ObjmountMount
from objmount.torch import PrefetchSampler
from tests.no_torch import without_torch


class Folder:
    """ImageFolder's shape: `samples` is [(path, class)]."""

    def __init__(self, root: Path, count: int) -> None:
        self.samples = [(str(root / f"class_{i % 3}" / f"img_{i:03d}.jpg"), i % 3)
                        for i in range(count)]

    def __len__(self) -> int:
        return len(self.samples)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict]:
    """A pretend mount on tmp_path/mnt of ours; the requests it would get."""
    mnt = tmp_path / "mnt"
    for c in range(3):
        (mnt / f"class_{c}").mkdir(parents=True)
    requests: list[dict] = []
    mounts = [ObjmountMount(str(mnt), os.geteuid()),
              ObjmountMount(str(tmp_path / "theirs"), 4242)]
    monkeypatch.setattr(objmount_torch, "objmount_mounts", lambda: mounts)
    monkeypatch.setattr(control, "control_of", lambda path: (
        control.Control(str(path), "/nonexistent.sock", 1), ""))

    def request(socket_path: str, op: str, payload: bytes = b"", **fields: object) -> dict:
        requests.append({"op": op, "paths": payload.decode().split("\n"), **fields})
        return {"ok": True}

    monkeypatch.setattr(control, "request", request)
    return requests


def test_a_random_epoch_is_published_then_yielded_unchanged(tmp_path: Path,
                                                             sent: list[dict]) -> None:
    folder = Folder(tmp_path / "mnt", 30)
    inner = RandomSampler(range(30), generator=torch.Generator().manual_seed(1))
    expected = list(RandomSampler(range(30), generator=torch.Generator().manual_seed(1)))
    sampler = PrefetchSampler(inner, folder)
    assert len(sampler) == 30
    assert list(sampler) == expected
    [order] = sent
    assert order["op"] == "order" and order["until_exit"] is True
    assert order["paths"] == [f"class_{i % 3}/img_{i:03d}.jpg" for i in expected]
    assert list(sampler) != expected  # the next epoch: a new order, published again
    assert len(sent) == 2 and sent[1]["client"] == order["client"]


def test_batches_are_yielded_as_batches_and_published_flat(tmp_path: Path,
                                                           sent: list[dict]) -> None:
    folder = Folder(tmp_path / "mnt", 10)
    sampler = PrefetchSampler(BatchSampler(range(10), batch_size=4, drop_last=False), folder)
    assert list(sampler) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sent[0]["paths"] == [f"class_{i % 3}/img_{i:03d}.jpg" for i in range(10)]


def test_set_epoch_reaches_a_distributed_sampler_and_ranks_publish_their_share(
    tmp_path: Path, sent: list[dict]
) -> None:
    folder = Folder(tmp_path / "mnt", 20)
    ranks = [PrefetchSampler(DistributedSampler(folder, num_replicas=2, rank=r, seed=7), folder)
             for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    assert ranks[0].epoch == 3  # other attributes are the wrapped sampler's
    epochs = [list(sampler) for sampler in ranks]
    reference = DistributedSampler(folder, num_replicas=2, rank=0, seed=7)
    reference.set_epoch(3)
    assert epochs[0] == list(reference)
    assert sorted(epochs[0] + epochs[1]) == list(range(20))
    assert sent[0]["client"] != sent[1]["client"]
    assert [len(o["paths"]) for o in sent] == [10, 10]


def test_paths_and_subsets_and_files_outside_the_mount(tmp_path: Path,
                                                       sent: list[dict]) -> None:
    folder = Folder(tmp_path / "mnt", 9)
    sampler = PrefetchSampler(range(3), Subset(folder, [8, 7, 6]))
    assert list(sampler) == [0, 1, 2]
    assert sent[-1]["paths"] == ["class_2/img_008.jpg", "class_1/img_007.jpg",
                                 "class_0/img_006.jpg"]
    mixed = [str(tmp_path / "mnt" / "class_0" / "a.jpg"), "/elsewhere/b.jpg",
             str(tmp_path / "theirs" / "c.jpg")]
    assert list(PrefetchSampler(range(3), paths=mixed)) == [0, 1, 2]
    assert sent[-1]["paths"] == ["class_0/a.jpg"]
    assert list(PrefetchSampler([1, 0], paths=lambda i: mixed[i])) == [1, 0]
    assert sent[-1]["paths"] == ["class_0/a.jpg"]


def test_files_on_no_objmount_mount_warn_once_and_change_nothing(
    tmp_path: Path, sent: list[dict]
) -> None:
    folder = Folder(tmp_path / "elsewhere", 5)
    sampler = PrefetchSampler(range(5), folder)
    with pytest.warns(RuntimeWarning, match="not on an objmount mount|none of the"):
        assert list(sampler) == list(range(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(sampler) == list(range(5))
    assert sent == []
    with pytest.warns(RuntimeWarning, match="no paths"):
        assert list(PrefetchSampler(range(2), object())) == [0, 1]


def test_a_refused_order_warns_once_and_training_goes_on(
    tmp_path: Path, sent: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> dict:
        raise control.ControlError("forbidden", "permission denied")

    monkeypatch.setattr(control, "request", refuse)
    sampler = PrefetchSampler(range(4), Folder(tmp_path / "mnt", 4))
    with pytest.warns(RuntimeWarning, match="permission denied"):
        assert list(sampler) == [0, 1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(sampler) == [0, 1, 2, 3]


def test_a_sampler_without_end_is_published_slice_by_slice(
    tmp_path: Path, sent: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objmount_torch, "MAX_ORDER_ITEMS", 4)
    folder = Folder(tmp_path / "mnt", 6)

    def forever():
        i = 0
        while True:
            yield i % 6
            i += 1

    taken = []
    for index in PrefetchSampler(forever(), folder):
        taken.append(index)
        if len(taken) == 10:
            break
    assert taken == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert [len(o["paths"]) for o in sent] == [4, 4, 4]


def test_objmount_and_its_cli_work_without_torch() -> None:
    result = without_torch(
        "import objmount, objmount.cli, objmount.control, objmount.controlcli\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('no torch')\n"
        "sys.argv = ['objmount', 'prefetch', '--help']\n"
        "from objmount.cli import main\n"
        "main()\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no torch\n") and "--order" in result.stdout


def test_objmount_torch_without_torch_says_what_is_missing() -> None:
    result = without_torch("import objmount.torch\n")
    assert result.returncode == 1
    assert "objmount.torch needs PyTorch (pip install torch)" in result.stderr
