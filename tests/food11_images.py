"""Food-11-shaped images that a tiny CNN can tell apart: each class has its own colour.

tests/food11_archive.py makes images of pure noise (right for checking bytes);
training needs a signal, so here every image is its class's colour plus noise,
as a real JPEG: `jpeg` a small one (1-2 KB, for tests), `photo` one of a real
photo's size (60-120 KB, as Food-11's, for the demo). Paths follow the raw Food-11
archive (`{split}/{label}_{n}.jpg`);
`tests.food11_archive.transformed` gives the layout objmount's ETL loads
(`{split}/class_{label:02d}/{label}_{n}.jpg`), the one ImageFolder reads.
"""

import io
import random
from collections.abc import Callable

from PIL import Image

CLASSES = 11
SPLITS = ("training", "validation", "evaluation")
SIZE_PX = 32


def class_colour(label: int) -> tuple[int, int, int]:
    """An RGB colour per class, spread around the colour wheel so that no two are close."""
    hue = label / CLASSES
    image = Image.new("HSV", (1, 1), (int(hue * 255), 200, 220)).convert("RGB")
    return image.getpixel((0, 0))


def jpeg(label: int, seed: str, size_px: int = SIZE_PX) -> bytes:
    """Return a `size_px` square JPEG of the class colour with per-pixel noise (about 1-2 KB)."""
    rng = random.Random(seed)
    colour = class_colour(label)
    noise = rng.randbytes(size_px * size_px * 3)
    # Noise of +-40 on each channel: the class stays visible, no two images share bytes.
    pixels = bytes(
        min(255, max(0, colour[i % 3] + noise[i] * 80 // 255 - 40)) for i in range(len(noise))
    )
    out = io.BytesIO()
    Image.frombytes("RGB", (size_px, size_px), pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


# A square of 320-440 px of the class colour with 40% noise is a JPEG of 60-120 KB at
# quality 90 (its size grows with the area), made in about 5 ms.
PHOTO_SIDE_PX = (320, 440)
PHOTO_NOISE = 0.4


def photo(label: int, seed: str) -> bytes:
    """Return a JPEG of a photo's size (60-120 KB): the class colour blended with noise."""
    rng = random.Random(seed)
    side = rng.randint(*PHOTO_SIDE_PX)
    noise = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    image = Image.blend(Image.new("RGB", (side, side), class_colour(label)), noise, PHOTO_NOISE)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def food11_images(per_split: dict[str, int],
                  image: Callable[[int, str], bytes] = jpeg) -> dict[str, bytes]:
    """Return `{split}/{label}_{n}.jpg` -> `image(label, seed)`, `per_split[split]` per class."""
    return {
        f"{split}/{label}_{n}.jpg": image(label, f"{split}/{label}/{n}")
        for split, count in per_split.items()
        for label in range(CLASSES)
        for n in range(count)
    }
