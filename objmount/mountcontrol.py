"""What a mount answers on its control channel: orders go to the read path, stats come from it.

The handlers of controlserver.ControlServer for one mount (control.py documents
the ops). FUSE-free: mount.py builds them over its read path.

Invariants:
- an "order" only replaces the order of the client it names (default: one per
  process); its paths are resolved lazily by the read path, never here;
- "stats" reads counters the trio thread keeps, and the disk cache's size in a
  disk thread (its index), never blocking the trio thread.
"""

import contextlib
import os
import sqlite3
import time
from collections.abc import Mapping

from objmount.cache.orderahead import TooManyOrders
from objmount.cache.readpath import CachedReadPath
from objmount.control import MAX_CLIENT_CHARS, ControlError
from objmount.controlserver import Handler, Request
from objmount.readpath import ReadPath


class MountControl:
    """The control handlers of one mount's read path."""

    def __init__(self, read_path: ReadPath) -> None:
        self.read_path = read_path
        self.started = time.monotonic()

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {"order": self.order, "stats": self.stats}

    async def order(self, request: Request) -> dict:
        path = self.read_path
        if not isinstance(path, CachedReadPath):
            raise ControlError("unavailable", "this mount has no block cache (--cache-mode "
                               "off): there is nowhere to prefetch to")
        if path.options.order_ahead == 0:
            raise ControlError("unavailable", "order prefetch is off on this mount "
                               "(--order-ahead 0)")
        client = request.header.get("client", f"pid:{request.peer.pid}")
        if not isinstance(client, str) or not 0 < len(client) <= MAX_CLIENT_CHARS:
            raise ControlError("bad_request", f"'client' must be a name of 1 to "
                               f"{MAX_CLIENT_CHARS} characters")
        until_exit = request.header.get("until_exit", False)
        if not isinstance(until_exit, bool):
            raise ControlError("bad_request", "'until_exit' must be true or false")
        try:
            count = path.orders.publish(client, request.payload,
                                        request.peer.pid if until_exit else None)
        except TooManyOrders as exc:
            raise ControlError("busy", str(exc)) from None
        return {"client": client, "paths": count}

    async def stats(self, request: Request) -> dict:
        path = self.read_path
        reply: dict[str, object] = {
            "pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started, 3),
            "stats": path.stats.as_dict(),
        }
        if isinstance(path, CachedReadPath):
            reply["orders"] = path.orders.orders()
            cache: dict[str, object] = {"max_bytes": path.options.max_size_bytes,
                                        "resident_bytes": None}
            store = path.store
            if store is not None:
                with contextlib.suppress(OSError, sqlite3.Error):
                    cache["resident_bytes"] = await path.disk_runner.call_once(
                        store.stored_bytes)
            policy = path.policy
            if policy is not None:
                cache["policy"] = policy.mode
                cache["policy_reason"] = policy.reason
                cache["pinned_bytes"] = cache["resident_bytes"] if policy.holding else 0
            reply["cache"] = cache
        return reply
