"""`@trio_test`: run an async test function under trio.run (no plugin needed)."""

import functools
from collections.abc import Awaitable, Callable

import trio


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Wrap an async test so pytest runs it (fixtures still arrive as arguments)."""

    @functools.wraps(fn)
    def run(*args: object, **kwargs: object) -> None:
        trio.run(functools.partial(fn, *args, **kwargs))

    return run
