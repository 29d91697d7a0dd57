"""Real JPEG files for the training benchmark: photo-sized, 60-120 KiB, made once with Pillow.

A training epoch decodes every image, and that CPU is part of the workload
(on 2 cores it competes with the mount), so `bench.train` reads real JPEGs,
not random bytes. Each image is 500 x 375 (ImageNet's typical size): a coarse
random colour field, smoothly upscaled, plus fine noise whose amplitude sets
the compressed size; quality 90. The noise is rescaled until the file lands
in [min_bytes, max_bytes] at a size drawn for its name. Every pixel comes from
numpy's generator seeded by the file's name (deterministic for one Pillow and
libjpeg build; the manifest holds the digests of the bytes actually written).
"""

import hashlib
import io
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

WIDTH, HEIGHT = 500, 375
QUALITY = 90
# Noise amplitude per byte of JPEG at 500 x 375, quality 90 (24 gave ~89 KiB here).
NOISE_PER_BYTE = 24 / (89 << 10)
ATTEMPTS = 6
GENERATOR_PROCESSES = 2


def encode(key: str, min_bytes: int, max_bytes: int) -> bytes:
    """The JPEG of `key`: a size drawn in [min_bytes, max_bytes], approached by its noise."""
    import numpy as np
    from PIL import Image

    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    target = int(rng.integers(min_bytes, max_bytes + 1))
    coarse = rng.integers(0, 256, (HEIGHT // 16 + 1, WIDTH // 16 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC),
                      dtype=np.float32)
    unit_noise = rng.standard_normal((HEIGHT, WIDTH, 3), dtype=np.float32) / 1.7
    amplitude = target * NOISE_PER_BYTE
    data = b""
    for _ in range(ATTEMPTS):
        pixels = np.clip(base + unit_noise * amplitude, 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=QUALITY)
        data = out.getvalue()
        if min_bytes <= len(data) <= max_bytes and abs(len(data) - target) < target * 0.15:
            break
        amplitude *= target / len(data)
    return data


def _write(args: tuple[Path, str, int, int]) -> tuple[str, int, str]:
    path, key, min_bytes, max_bytes = args
    data = encode(key, min_bytes, max_bytes)
    path.write_bytes(data)
    return key, len(data), hashlib.sha256(data).hexdigest()


def write_all(root: Path, keys: list[str], min_bytes: int, max_bytes: int) -> list:
    """Write the JPEG of every key under `root`; return their manifest entries, in order."""
    from bench.dataset import Entry

    jobs = [(root / key, key, min_bytes, max_bytes) for key in keys]
    with ProcessPoolExecutor(GENERATOR_PROCESSES) as pool:
        return [Entry(*row) for row in pool.map(_write, jobs, chunksize=64)]
