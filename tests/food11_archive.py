"""A synthetic Food-11 archive: small real JPEGs named as in the real one.

Food-11 holds training/, validation/ and evaluation/, each a flat directory of
`{class}_{n}.jpg` images, class the index 0..10. Every image here has its own
random pixels, so no two files have the same bytes.
"""

import io
import random
import zipfile
from pathlib import Path

from PIL import Image

CLASSES = 11
SPLITS = ("training", "validation", "evaluation")
# Files the Food-11 layout must leave in place and report.
STRAYS = {"training/notes.txt": b"not an image\n", "validation/11_0.jpg": b"class 11?\n"}


def jpeg(seed: str) -> bytes:
    """Return a 16x16 JPEG of random pixels (about 1 KB)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def food11_files(per_class: int) -> dict[str, bytes]:
    """Return the archive's files by path: `per_class` images per class and split, and STRAYS."""
    files = {
        f"{split}/{label}_{n}.jpg": jpeg(f"{split}/{label}/{n}")
        for split in SPLITS
        for label in range(CLASSES)
        for n in range(per_class)
    }
    return files | STRAYS


def transformed(files: dict[str, bytes]) -> dict[str, bytes]:
    """Return where the Food-11 layout puts each file: images under class_NN/, strays stay."""
    placed = {}
    for path, data in files.items():
        split, name = path.split("/")
        label = int(name.split("_")[0]) if name.endswith(".jpg") else CLASSES
        placed[f"{split}/class_{label:02d}/{name}" if label < CLASSES else path] = data
    return placed


def write_zip(files: dict[str, bytes], archive: Path) -> None:
    """Write `files` as a zip archive (stored, as JPEGs do not compress)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path, data in sorted(files.items()):
            zf.writestr(path, data)
