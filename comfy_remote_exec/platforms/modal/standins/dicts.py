"""`DictStandIn`: `modal.Dict` in this process (see the package's docstring)."""

from __future__ import annotations

import pickle
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from .common import Both

_MISSING = object()


class DictStandIn:
    """`modal.Dict`, in this process."""

    def __init__(self) -> None:
        self._data: dict[Any, bytes] = {}
        self._lock = threading.Lock()

    def _get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            raw = self._data.get(key)
        return default if raw is None else pickle.loads(raw)

    async def _get_aio(self, key: Any, default: Any = None) -> Any:
        return self._get(key, default)

    get = Both(_get, _get_aio)

    def _contains(self, key: Any) -> bool:
        with self._lock:
            return key in self._data

    async def _contains_aio(self, key: Any) -> bool:
        return self._contains(key)

    contains = Both(_contains, _contains_aio)

    def _len(self) -> int:
        with self._lock:
            return len(self._data)

    async def _len_aio(self) -> int:
        return self._len()

    len = Both(_len, _len_aio)

    def _put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        raw = pickle.dumps(value)
        with self._lock:
            if skip_if_exists and key in self._data:
                return False
            self._data[key] = raw
            return True

    async def _put_aio(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        return self._put(key, value, skip_if_exists=skip_if_exists)

    put = Both(_put, _put_aio)

    def _update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        items = {**(dict(other) if other else {}), **kwargs}
        raw = {k: pickle.dumps(v) for k, v in items.items()}
        with self._lock:
            self._data.update(raw)

    async def _update_aio(self, other: Mapping[Any, Any] | None = None, /,
                          **kwargs: Any) -> None:
        self._update(other, **kwargs)

    update = Both(_update, _update_aio)

    def _pop(self, key: Any, default: Any = _MISSING) -> Any:
        with self._lock:
            raw = self._data.pop(key, None)
        if raw is None:
            if default is _MISSING:
                raise KeyError(f"{key} not in dict")
            return default
        return pickle.loads(raw)

    async def _pop_aio(self, key: Any, default: Any = _MISSING) -> Any:
        return self._pop(key, default)

    pop = Both(_pop, _pop_aio)

    def _clear(self) -> None:
        with self._lock:
            self._data.clear()

    async def _clear_aio(self) -> None:
        self._clear()

    clear = Both(_clear, _clear_aio)

    def _snapshot(self) -> list[tuple[Any, bytes]]:
        with self._lock:
            return list(self._data.items())

    def _keys(self) -> Iterator[Any]:
        return iter([k for k, _ in self._snapshot()])

    async def _keys_aio(self) -> AsyncIterator[Any]:
        for key, _ in self._snapshot():
            yield key

    keys = Both(_keys, _keys_aio)

    def _values(self) -> Iterator[Any]:
        return iter([pickle.loads(v) for _, v in self._snapshot()])

    async def _values_aio(self) -> AsyncIterator[Any]:
        for _, raw in self._snapshot():
            yield pickle.loads(raw)

    values = Both(_values, _values_aio)

    def _items(self) -> Iterator[tuple[Any, Any]]:
        return iter([(k, pickle.loads(v)) for k, v in self._snapshot()])

    async def _items_aio(self) -> AsyncIterator[tuple[Any, Any]]:
        for key, raw in self._snapshot():
            yield key, pickle.loads(raw)

    items = Both(_items, _items_aio)

    def __getitem__(self, key: Any) -> Any:
        value = self._get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(f"{key} not in dict")
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._put(key, value)

    def __delitem__(self, key: Any) -> None:
        self._pop(key)

    def __contains__(self, key: Any) -> bool:
        return self._contains(key)
