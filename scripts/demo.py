"""The embedded-default demo: a Food-11-shaped dataset in a local S3 server, loaded with
`objmount etl`, mounted, and read by PyTorch for two epochs.

Run by `bash scripts/dev.sh demo` (options: `--per-class N`). It
1. starts moto's S3 server on 127.0.0.1 and serves a generated Food-11 archive
   (real JPEGs, named as in the real archive) over HTTP on 127.0.0.1;
2. runs `objmount etl run etl/food11.toml` against them: download, reshape into
   class_00..class_10 directories, parallel upload into demo:food11;
3. mounts demo:food11 with a cache directory of its own;
4. reads training/ with torchvision's ImageFolder + DataLoader(num_workers=4) for
   two shuffled epochs, printing images/s of the cold and the warm epoch and the
   cache hit rate (from the counters of the mount's user.objmount.stats);
5. unmounts, stops the servers and deletes its temporary directory.

Invariant: the servers and the mount run in sessions of their own (Ctrl-C in the
terminal does not reach them) and are stopped in a `finally`, so Ctrl-C at any
point leaves no mount, no server and no temporary files behind.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.food11_archive import write_zip
from tests.food11_images import food11_images
from tests.integration.mounting import MountProcess, mounted
from tests.servers.http_server import FileServer
from tests.servers.s3_server import MotoS3Server

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 2
WORKERS = 4  # as a typical training script; more than this machine's cores is fine
BATCH = 32


def run(*args: str) -> None:
    """Run a command to completion; raise CalledProcessError if it fails.

    On Ctrl-C (or any error) the command is interrupted too and waited for:
    subprocess.run would leave it unreaped, and a terminal's Ctrl-C may not have reached it.
    """
    proc = subprocess.Popen(args)
    try:
        code = proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, args)


def mount_stats(mount: MountProcess) -> dict[str, int]:
    return json.loads(os.getxattr(mount.path, "user.objmount.stats"))


def epoch(loader) -> tuple[int, float]:
    """Read one epoch; return the images read and the seconds it took."""
    started = time.monotonic()
    images = sum(len(labels) for _, labels in loader)
    return images, time.monotonic() - started


def train_reads(mount: MountProcess) -> None:
    """Two epochs of ImageFolder + DataLoader over the mount, each reported as it ends."""
    # torch is imported here, not at the top: it takes seconds, and the servers
    # should be up by then.
    import warnings

    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    warnings.filterwarnings("ignore", "This DataLoader will create")  # workers > cores
    transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    folder = datasets.ImageFolder(mount.path / "training", transform=transform)
    loader = DataLoader(folder, batch_size=BATCH, shuffle=True, num_workers=WORKERS)
    print(f"ImageFolder: {len(folder)} images in {len(folder.classes)} classes; "
          f"DataLoader with {WORKERS} workers")
    for number, name in zip(range(1, EPOCHS + 1), ("cold", "warm"), strict=True):
        before = mount_stats(mount)
        images, seconds = epoch(loader)
        after = mount_stats(mount)
        gets, ahead, hits, misses = (
            after[counter] - before[counter]
            for counter in ("gets", "dir_ahead_gets", "cache_hits", "cache_misses")
        )
        # Opens that found their image cached (fetched ahead, or in an earlier epoch).
        hit_rate = hits / max(1, hits + misses)
        print(f"epoch {number} ({name}): {images} images in {seconds:.2f}s = "
              f"{images / seconds:.0f} images/s, {gets} GETs ({ahead} ahead of the reader), "
              f"cache hit rate {hit_rate:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60,
                        help="training images per class (evaluation and validation: a sixth)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # in order with the ETL's output, when piped

    work = Path(tempfile.mkdtemp(prefix="objmount-demo-"))
    server = MotoS3Server(work / "s3.log")
    try:
        print(f"working in {work}")
        server.start()
        print(f"started a local S3 server on 127.0.0.1:{server.port}")
        config = work / "rclone.conf"
        config.write_text(server.rclone_section("demo"))

        side = max(1, args.per_class // 6)
        files = food11_images({"training": args.per_class, "validation": side,
                               "evaluation": side})
        web_root = work / "web"
        web_root.mkdir()
        write_zip(files, web_root / "food11.zip")
        print(f"generated a Food-11-shaped archive: {len(files)} JPEGs in 11 classes")
        with FileServer(web_root) as web:
            run(sys.executable, "-m", "objmount", "etl", "run", str(REPO / "etl/food11.toml"),
                "--url", web.url("food11.zip"), "--staging", str(work / "staging"),
                "--target", "demo:food11", "--config", str(config))
        print("loaded it into demo:food11 with `objmount etl run etl/food11.toml`")

        with mounted("demo:food11", work / "mnt", config, "--cache-dir",
                     str(work / "cache")) as mount:
            print(f"mounted demo:food11 on {mount.path}")
            train_reads(mount)
        print("unmounted")
    finally:
        server.stop()
        print("stopped the S3 server")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: nothing left mounted or running", file=sys.stderr)
        sys.exit(130)
