"""Order-driven prefetch with fakes: a fake read path (AheadTarget) and a dict namespace."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from objmount.backends.base import ObjectInfo
from objmount.cache import orderahead
from objmount.cache.orderahead import OrderAhead
from tests.unit.trio_test import trio_test

PREFIX = "data/"


def obj(path: str, size: int = 1000) -> ObjectInfo:
    return ObjectInfo(key=PREFIX + path, size=size, etag="e", mtime_ns=1)


class FakeTarget:
    """Records what is fetched, in the order the fetches are started (reserved: their tasks
    run in any order); `room` files fit in its buffer; fetches wait for `release()` when
    gated."""

    def __init__(self, room: int = 10_000, cached: set[str] = frozenset(),
                 failing: set[str] = frozenset(), gated: bool = False) -> None:
        self.room = room
        self.cached = set(cached)
        self.failing = set(failing)
        self.gated = gated
        self.fetched: list[str] = []
        self.dropped: list[str] = []
        self.held: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self._gate = trio.Event()

    def release(self) -> None:
        self._gate.set()
        self._gate = trio.Event()

    async def needs_get(self, objects: list[ObjectInfo]) -> list[bool]:
        await trio.sleep(0)
        return [o.key not in self.cached for o in objects]

    def reserve(self, o: ObjectInfo) -> bool:
        if len(self.held) + self.in_flight >= self.room:
            return False
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.fetched.append(o.key.removeprefix(PREFIX))
        return True

    async def fetch(self, o: ObjectInfo) -> bool:
        try:
            if self.gated:
                await self._gate.wait()
            else:
                await trio.sleep(0)
            if o.key in self.failing:
                raise OSError("GET failed")
            self.held.add(o.key)
            return True
        finally:
            self.in_flight -= 1

    def drop(self, o: ObjectInfo) -> None:
        if o.key in self.held:
            self.held.discard(o.key)
            self.dropped.append(o.key.removeprefix(PREFIX))

    def opened(self, o: ObjectInfo) -> None:
        """What the read path does at open: the buffered block is claimed."""
        self.held.discard(o.key)


def namespace(paths: list[str]) -> Callable:
    objects = {p: obj(p) for p in paths}

    async def resolve(path: str) -> ObjectInfo | None:
        await trio.sleep(0)
        return objects.get(path)

    return resolve


def names(count: int, start: int = 0) -> list[str]:
    return [f"class_{i % 10}/img_{i:06d}.jpg" for i in range(start, start + count)]


def payload(paths: list[str]) -> bytes:
    return "\n".join(paths).encode()


@asynccontextmanager
async def running(target: FakeTarget, paths: list[str], **kwargs: object
                  ) -> AsyncIterator[OrderAhead]:
    kwargs.setdefault("parallel", 4)
    orders = OrderAhead(target, namespace(paths), PREFIX, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(orders.serve)
        yield orders
        nursery.cancel_scope.cancel()


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def open_file(orders: OrderAhead, target: FakeTarget, path: str) -> None:
    target.opened(obj(path))
    orders.opened(obj(path))


@trio_test
async def test_files_are_fetched_in_the_published_order_with_at_most_n_in_flight() -> None:
    paths = names(100)
    target = FakeTarget(gated=True)
    async with running(target, paths, parallel=4) as orders:
        assert orders.publish("rank0", payload(paths)) == 100
        await settle()
        assert target.fetched == paths[:4] and target.in_flight == 4
        for _ in range(30):
            target.release()
            await settle()
        assert target.fetched == paths
        assert target.most_in_flight == 4
        assert orders.active


@trio_test
async def test_files_cached_or_opened_before_their_turn_are_not_fetched() -> None:
    paths = names(20)
    target = FakeTarget(cached={PREFIX + paths[1], PREFIX + paths[5]}, gated=True)
    async with running(target, paths, parallel=2) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        open_file(orders, target, paths[3])  # a worker got there first
        for _ in range(20):
            target.release()
            await settle()
    assert target.fetched == [p for i, p in enumerate(paths) if i not in (1, 3, 5)]


@trio_test
async def test_opens_out_of_order_advance_the_position_and_the_order_ends_at_its_end() -> None:
    paths = names(64)
    target = FakeTarget()
    async with running(target, paths) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        # Four workers, batches of 16: each reads its batch in turn, all at once.
        for i in range(16):
            for batch in range(4):
                open_file(orders, target, paths[batch * 16 + i])
            await settle()
            assert orders.orders() == [] or orders.orders()[0]["position"] == i + 1
        await settle()
        assert not orders.active  # every file opened: the order ended
    assert target.dropped == [] and sorted(target.fetched) == sorted(paths)


@trio_test
async def test_prefetch_stops_when_the_buffer_is_full_and_goes_on_as_files_are_opened() -> None:
    paths = names(50)
    target = FakeTarget(room=8)
    async with running(target, paths) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        assert target.fetched == paths[:8]
        for i in range(3):
            open_file(orders, target, paths[i])
        await settle()
        assert target.fetched == paths[:11]
        assert orders.ahead_files() == 8


@trio_test
async def test_prefetch_goes_no_further_than_ahead_files_beyond_the_furthest_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(orderahead, "AHEAD_FILES", 5)
    paths = names(30)
    target = FakeTarget()
    async with running(target, paths) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        assert target.fetched == paths[:5]
        open_file(orders, target, paths[9])  # a worker far ahead (9 is not fetched)
        await settle()
        assert target.fetched == paths[:9] + paths[10:15]


@trio_test
async def test_a_prefetch_landing_after_its_open_is_left_to_the_reader_even_at_the_end() -> None:
    paths = names(4)
    target = FakeTarget(gated=True)
    async with running(target, paths) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        for path in paths:  # opened while their GETs run; the last open ends the order
            orders.opened(obj(path))
        await settle()
        assert not orders.active
        target.release()
        await settle()
    assert target.dropped == [] and target.held == {obj(p).key for p in paths}


@trio_test
async def test_a_file_never_opened_is_passed_and_its_prefetch_counted_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(orderahead, "LAG_FILES", 10)
    paths = names(40)
    target = FakeTarget()
    async with running(target, paths) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        for i, path in enumerate(paths[:30]):
            if i != 2:  # the sampler's dataset skips this one
                open_file(orders, target, path)
        await settle()
        assert target.dropped == [paths[2]]
        assert orders.orders()[0]["position"] == 30


@trio_test
async def test_a_new_order_of_a_client_replaces_its_last_and_drops_what_was_unopened() -> None:
    first, second = names(20), names(20, start=100)
    target = FakeTarget(room=6)
    async with running(target, first + second) as orders:
        orders.publish("rank0", payload(first))
        await settle()
        open_file(orders, target, first[0])
        await settle()
        assert orders.publish("rank0", payload(second)) == 20
        await settle()
        assert sorted(target.dropped) == sorted(first[1:7])
        assert target.fetched[-6:] == second[:6]
        assert [o["client"] for o in orders.orders()] == ["rank0"]
        orders.publish("rank0", b"")  # cancel
        assert not orders.active
        assert sorted(target.dropped) == sorted(first[1:7] + second[:6])


@trio_test
async def test_orders_of_two_ranks_take_turns() -> None:
    rank0, rank1 = names(30), names(30, start=1000)
    target = FakeTarget(gated=True)
    async with running(target, rank0 + rank1, parallel=4) as orders:
        orders.publish("rank0", payload(rank0))
        orders.publish("rank1", payload(rank1))
        await settle()
        for _ in range(10):
            target.release()
            await settle()
        fetched0 = [p for p in target.fetched if p in rank0]
        fetched1 = [p for p in target.fetched if p in rank1]
        assert fetched0 == rank0[:len(fetched0)] and fetched1 == rank1[:len(fetched1)]
        assert abs(len(fetched0) - len(fetched1)) <= 4


@trio_test
async def test_paths_not_in_the_mount_or_failing_are_skipped() -> None:
    paths = names(10)
    listed = paths[:3] + paths[4:]
    target = FakeTarget(failing={PREFIX + paths[5]})
    orders = OrderAhead(target, namespace(listed), PREFIX, parallel=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(orders.serve)
        orders.publish("c", payload([*paths, "../escape", "a//b"]))
        await settle()
        assert orders.files_missing == 3
        assert paths[3] not in target.fetched and paths[5] in target.fetched
        assert orders.orders()[0]["fetched"] == 8
        nursery.cancel_scope.cancel()


def test_an_order_of_a_client_that_exited_or_of_nobody_reading_ends() -> None:
    paths = names(10)
    alive = {111: True, 222: True}

    async def main() -> None:
        target = FakeTarget()
        async with running(target, paths, process_alive=lambda pid: alive[pid]) as orders:
            orders.publish("a", payload(paths), pid=111)
            orders.publish("b", payload(paths), pid=222)
            orders.publish("c", payload(paths))
            await settle()
            alive[111] = False
            await trio.sleep(orderahead.TICK_S + 0.1)
            assert sorted(o["client"] for o in orders.orders()) == ["b", "c"]
            open_file(orders, target, paths[0])
            await trio.sleep(orderahead.ORDER_IDLE_S + orderahead.TICK_S)
            assert orders.orders() == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@trio_test
async def test_a_million_paths_keep_a_bounded_window() -> None:
    paths = names(1_000_000)
    target = FakeTarget(room=64)
    async with running(target, paths[:2000]) as orders:
        orders.publish("big", payload(paths))
        await settle()
        order = orders._orders["big"]
        assert len(order.window) <= orderahead.LAG_FILES + orderahead.PARSE_AHEAD_FILES
        assert len(order.by_key) == len(order.window)
        assert order.parsed < 2 * orderahead.PARSE_AHEAD_FILES


@trio_test
async def test_the_epochs_bytes_are_estimated_for_the_cache_policy() -> None:
    told: list[int | None] = []
    paths = names(1000)
    target = FakeTarget()
    async with running(target, paths, on_epoch_bytes=told.append) as orders:
        orders.publish("rank0", payload(paths))
        await settle()
        assert told == [1000 * 1000]
        orders.publish("rank0", b"")
    assert told[-1] is None
