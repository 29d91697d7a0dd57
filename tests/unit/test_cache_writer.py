"""The cache's writer thread: every block submitted is written and reported exactly once,
in batches sharing one index transaction, and close writes what is still queued."""

import os
from pathlib import Path

import trio

from objmount.cache.blocks import BlockStore
from objmount.cache.writer import BATCH_BLOCKS, BlockWriter, Outcome, Write
from tests.unit.test_cache_blocks import MiB, key, payload
from tests.unit.trio_test import trio_test


@trio_test
async def test_every_block_submitted_is_written_and_reported_once_and_close_drains(
        tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "cache", max_size_bytes=64 * MiB)
    reported: list[Outcome] = []
    writer = BlockWriter(store, reported.extend)
    blocks = [(key(f"f{i}"), payload(i, 100 * 1024)) for i in range(BATCH_BLOCKS + 8)]
    for k, data in blocks:  # queued before the thread starts: batches of BATCH_BLOCKS
        writer.submit(Write(k, f"f{k.key}", data, token=k))
    writer.start()
    await trio.to_thread.run_sync(writer.close)  # its reports run on this thread meanwhile
    await trio.lowlevel.checkpoint()
    try:
        assert sorted(w.key.key for w, _, _ in reported) == sorted(k.key for k, _ in blocks)
        assert all(stored and opened is not None for _, stored, opened in reported)
        assert writer.batches == 2
        for k, data in blocks:
            assert store.read_block(k) == data
    finally:
        for _, _, opened in reported:
            if opened is not None:
                os.close(opened.fd)
        store.close()


@trio_test
async def test_a_block_the_store_refuses_is_reported_not_stored(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "cache", max_size_bytes=MiB // 2)
    reported: list[Outcome] = []
    writer = BlockWriter(store, reported.extend)
    writer.start()
    big = key("big", length=MiB)  # larger than the whole cache
    writer.submit(Write(big, "big", bytes(big.length)))
    await trio.to_thread.run_sync(writer.close)
    await trio.lowlevel.checkpoint()
    try:
        assert [(w.key, stored, opened) for w, stored, opened in reported] == [
            (big, False, None)]
    finally:
        store.close()
