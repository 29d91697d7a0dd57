"""Cache settings shared by the mount and the cache commands, and where blocks live.

Defaults and their reasons are here, once; cli.py only parses user text into a
CacheOptions. The `source` of a target names the store and container in block
keys: the same for every remote name pointing at the same store, so a mount and
`objmount warm` (or two remotes) share blocks.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from objmount.cache.blocks import source_id
from objmount.config import Target

MiB = 1 << 20
GiB = 1 << 30

# Measured (CachedReadPath without FUSE, SeaweedFS behind bench/'s relay at 20 ms
# RTT, 16 parallel GETs, one 256 MiB object read in 1 MiB reads, best of 3):
# 1 MiB blocks 104 MiB/s; 2, 4, 8, 16 MiB all 156-173 MiB/s (the relay's and the
# loaded 2-core machine's ceiling); a cold random 64 KiB read costs 41, 65, 50, 70,
# 94 ms. 8 MiB: top of the plateau with half the GETs of 4 MiB (boto3 spends ~2 ms
# of CPU per GET), at ~20 ms more per cold random read; 16 MiB buys nothing more.
DEFAULT_BLOCK_SIZE = 8 * MiB
DEFAULT_MAX_SIZE = 10 * GiB
# Read-ahead: 64 MiB keeps 8 blocks in flight per sequential reader, enough to
# fill 16 parallel GETs with two readers.
DEFAULT_READ_AHEAD = 64 * MiB
# Everything in memory, for all open files together (read-ahead + hot tier).
# Measured (bench/, 4 shards read at once, 20 ms RTT): peak RSS is about the
# interpreter's 85 MB plus this budget; 96 MiB keeps the mount under 200 MB, and
# 128 or 256 MiB read no faster on these 2 cores (within run-to-run noise).
DEFAULT_MAX_BUFFER_MEMORY = 96 * MiB
# The hot tier mostly repeats the kernel's page cache (kept while the ETag is
# unchanged); it serves re-reads after the kernel dropped its pages.
DEFAULT_CACHE_MEM = 32 * MiB
# Directory read-ahead: how many bytes of a directory's small files may be fetched
# ahead of the reader's opens (~700 ImageFolder JPEGs of 90 KB). On disk, not in
# memory; bounds what one directory costs if the reader stops.
DEFAULT_DIR_READ_AHEAD = 64 * MiB
# Order-driven prefetch: GETs in flight ahead of an order's readers (Little's law: files/s
# x RTT; at 20 ms, 600 files/s need 12). Within --max-parallel: background calls hold at
# most three quarters of its threads (runner.background_share). Measured (bench.train
# --order-ahead 2,4,8,12,24,48; 2 cores, +20 ms, 4 and 8 DataLoader workers): the cold
# epoch rises to N = 8 (every open a hit) and is flat beyond it (150-173 images/s, within
# noise); 12 keeps that margin for a reader 1.5x faster than these 2 cores decode.
DEFAULT_ORDER_AHEAD = 12


@dataclass(frozen=True)
class CacheOptions:
    """How the block cache of a mount (or of `warm`) is sized."""

    cache_dir: Path
    max_size_bytes: int = DEFAULT_MAX_SIZE
    block_size_bytes: int = DEFAULT_BLOCK_SIZE
    read_ahead_bytes: int = DEFAULT_READ_AHEAD
    max_buffer_memory_bytes: int = DEFAULT_MAX_BUFFER_MEMORY
    cache_mem_bytes: int = DEFAULT_CACHE_MEM
    dir_read_ahead_bytes: int = DEFAULT_DIR_READ_AHEAD
    order_ahead: int = DEFAULT_ORDER_AHEAD


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return $XDG_CACHE_HOME/objmount, else ~/.cache/objmount."""
    env = os.environ if env is None else env
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "objmount"


# Options that tell one store (or one account in it) from another, per remote type.
_WHERE = {
    "s3": ("endpoint", "region"),
    "swift": ("storage_url", "auth", "tenant", "tenant_id", "domain", "region"),
}
_ENV_WHERE = {
    "s3": ("AWS_ENDPOINT_URL", "AWS_REGION"),
    "swift": ("OS_STORAGE_URL", "OS_AUTH_URL", "OS_PROJECT_NAME", "OS_TENANT_NAME",
              "OS_PROJECT_ID", "OS_REGION_NAME"),
}


def source_for(target: Target, env: Mapping[str, str] | None = None) -> str:
    """Return the block-key source of `target`: remote type, where the store is, container."""
    env = os.environ if env is None else env
    remote = target.remote
    parts = [remote.get(name) for name in _WHERE.get(remote.type, ("endpoint",))]
    if remote.flag("env_auth"):
        parts += [env.get(name, "") for name in _ENV_WHERE.get(remote.type, ())]
    return source_id(remote.type, ",".join(p for p in parts if p), target.container)
