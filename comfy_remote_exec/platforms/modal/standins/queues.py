"""`QueueStandIn`: `modal.Queue` in this process (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import queue
import threading
import time
from collections import deque
from typing import Any

from .common import Both, Waiters, modal_error

PARTITION_ITEMS = 5000
ITEM_BYTES = 1024 * 1024


def _partition_key(partition: str | None) -> str:
    if partition is None:
        return ""
    if not 1 <= len(partition.encode("utf-8")) <= 64:
        raise modal_error("InvalidError")("Queue partition key must be between 1 and 64 "
                                          "characters.")
    return partition


class QueueStandIn:
    """`modal.Queue`, in this process."""

    def __init__(self, partition_items: int = PARTITION_ITEMS) -> None:
        self.partition_items = partition_items
        self._parts: dict[str, deque[bytes]] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters: dict[str, Waiters] = {}
        self._space = Waiters()

    def _take(self, key: str, n: int) -> list[Any]:
        part = self._parts.get(key)
        taken = [part.popleft() for _ in range(min(n, len(part)))] if part else []
        if taken:
            self._cond.notify_all()
            self._space.wake_all()
        return [pickle.loads(raw) for raw in taken]

    def _get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None) -> list[Any]:
        key = _partition_key(partition)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                items = self._take(key, n_values)
                if items or not block:
                    return items
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty()
                self._cond.wait(left)

    async def _get_many_aio(self, n_values: int, block: bool = True,
                            timeout: float | None = None, *,
                            partition: str | None = None) -> list[Any]:
        key = _partition_key(partition)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._lock:
                items = self._take(key, n_values)
                if items or not block:
                    return items
                fut = self._waiters.setdefault(key, Waiters()).add()
            left = None if deadline is None else deadline - loop.time()
            try:
                if left is not None and left <= 0:
                    raise asyncio.TimeoutError
                await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                with self._lock:
                    self._waiters[key].discard(fut)
                    items = self._take(key, n_values)  # one last look, as a server would
                if items:
                    return items
                raise queue.Empty() from None

    get_many = Both(_get_many, _get_many_aio)

    def _get(self, block: bool = True, timeout: float | None = None, *,
             partition: str | None = None) -> Any:
        items = self._get_many(1, block, timeout, partition=partition)
        return items[0] if items else None

    async def _get_aio(self, block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None) -> Any:
        items = await self._get_many_aio(1, block, timeout, partition=partition)
        return items[0] if items else None

    get = Both(_get, _get_aio)

    def _encode(self, values: list[Any]) -> list[bytes]:
        encoded = [pickle.dumps(v) for v in values]
        if any(len(raw) > ITEM_BYTES for raw in encoded):
            raise modal_error("RequestSizeError")("Queue.put request is too large")
        return encoded

    def _append(self, key: str, encoded: list[bytes]) -> bool:
        part = self._parts.setdefault(key, deque())
        if len(part) + len(encoded) > self.partition_items:
            return False
        part.extend(encoded)
        self._cond.notify_all()
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.wake_all()
        return True

    def _put_many(self, vs: list[Any], block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        key, encoded = _partition_key(partition), self._encode(list(vs))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._append(key, encoded):
                left = None if deadline is None else deadline - time.monotonic()
                if not block or (left is not None and left <= 0):
                    raise queue.Full(f"partition {key!r} holds {self.partition_items} items")
                self._cond.wait(left)

    async def _put_many_aio(self, vs: list[Any], block: bool = True,
                            timeout: float | None = None, *, partition: str | None = None,
                            partition_ttl: int = 24 * 3600) -> None:
        key, encoded = _partition_key(partition), self._encode(list(vs))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._lock:
                if self._append(key, encoded):
                    return
                fut = self._space.add()
            left = None if deadline is None else deadline - loop.time()
            if not block or (left is not None and left <= 0):
                raise queue.Full(f"partition {key!r} holds {self.partition_items} items")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, left)

    put_many = Both(_put_many, _put_many_aio)

    def _put(self, v: Any, block: bool = True, timeout: float | None = None, *,
             partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        self._put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    async def _put_aio(self, v: Any, block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        await self._put_many_aio([v], block, timeout, partition=partition,
                                 partition_ttl=partition_ttl)

    put = Both(_put, _put_aio)

    def _len(self, *, partition: str | None = None, total: bool = False) -> int:
        with self._lock:
            if total:
                return sum(len(p) for p in self._parts.values())
            return len(self._parts.get(_partition_key(partition), ()))

    async def _len_aio(self, *, partition: str | None = None, total: bool = False) -> int:
        return self._len(partition=partition, total=total)

    len = Both(_len, _len_aio)

    def _clear(self, *, partition: str | None = None, all: bool = False) -> None:
        with self._cond:
            if all:
                self._parts.clear()
            else:
                self._parts.pop(_partition_key(partition), None)
            self._cond.notify_all()
            self._space.wake_all()

    async def _clear_aio(self, *, partition: str | None = None, all: bool = False) -> None:
        self._clear(partition=partition, all=all)

    clear = Both(_clear, _clear_aio)
