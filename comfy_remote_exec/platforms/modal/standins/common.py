"""What the stand-ins share: Modal's exception classes, and its two-way methods."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any


@functools.cache
def modal_error(name: str) -> type[BaseException]:
    """`modal.exception.<name>`, or a class of that name when `modal` is not installed
    (the local run does not need it)."""
    try:
        import modal.exception as modal_exceptions
    except ImportError:
        return type(name, (Exception,), {"__module__": __name__})
    cls = getattr(modal_exceptions, name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    return cls


class Both:
    """A method callable both ways, as Modal's are: `obj.m(...)` and `await obj.m.aio(...)`."""

    def __init__(self, sync: Callable[..., Any], aio: Callable[..., Any]) -> None:
        self.sync, self.aio_fn = sync, aio

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        bound = functools.partial(self.sync, obj)
        bound.aio = functools.partial(self.aio_fn, obj)  # type: ignore[attr-defined]
        return bound


class Waiters:
    """Futures of `.aio` readers, woken from any thread."""

    def __init__(self) -> None:
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._futures.append((loop, fut))
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._futures = [(lp, f) for lp, f in self._futures if f is not fut]

    def wake_all(self) -> None:
        futures, self._futures = self._futures, []
        for loop, fut in futures:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
