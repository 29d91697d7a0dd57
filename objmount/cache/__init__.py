"""The training-side cache: blocks on local disk, a hot tier in memory, read-ahead.

blocks.py stores blocks on disk (store v3: keys.py names a block, blockfile.py
is its file, index.py the SQLite index of sizes and recency, legacy.py the
layouts before v3, never opened); memory.py holds the one global memory budget and the hot tier;
prefetch.py reads ahead per open file through a fetch callable; cached_readpath.py
puts them together as the mount's CachedReadPath; warmup.py and tools.py are
the `objmount warm` and `objmount cache ...` commands. Nothing here imports
pyfuse3: the cache is tested without FUSE.
"""
