"""The local copy of a remote's catalog (its node types and model files).

The local UI offers the remote's models and nodes (`union`) and the accept
path checks a graph against them, neither of which may wait for the remote on
every request (a RunPod catalog is a job, which may wake a GPU worker). So
one `RemoteCatalogCache` per remote keeps its last `RemoteCatalog` in memory
and in the extension's state dir (so a restart starts warm), and asks again:

- when the remote reports another `content_version` (`note_version`: its
  `/health`, a job's end), in the background;
- when the copy is older than `max_age` and someone reads it (`stale()`),
  in the background, asking only whether it changed (`known_version`: the
  job API answers 304);
- on demand (`refresh(force=True)`).

Refreshes are single-flight; a failed one keeps the old copy and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Catalog
from ..errors import RemoteExecError
from ..fsutil import atomic_write_json
from ..protocol.catalog import RemoteCatalog

log = logging.getLogger(__name__)

MAX_AGE = 60.0  # seconds before a read asks the remote (cheaply) whether it changed
RETRY_AFTER = 30.0  # seconds after a failed fetch during which reads do not wait again


class RemoteCatalogCache:
    def __init__(self, backend: Backend, path: Path, *, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.path = path
        self.max_age = max_age
        self.clock = clock
        self.fetched_at: float | None = None
        self.error: str | None = None
        self._failed_at: float | None = None
        self._catalog: RemoteCatalog | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[RemoteCatalog | None] | None = None
        # Asked once: a runtime Protocol check inspects every member, on the accept path.
        self.source: Catalog | None = backend if isinstance(backend, Catalog) else None
        self.supported = self.source is not None
        self._load()

    def current(self) -> RemoteCatalog | None:
        """The last catalog fetched (or persisted), without asking the remote."""
        return self._catalog

    def stale(self) -> bool:
        return self.fetched_at is None or self.clock() - self.fetched_at >= self.max_age

    def status(self) -> dict[str, Any] | None:
        """Freshness for `GET /remote_exec/status`: version, fetched_at, age."""
        if not self.supported:
            return None
        cat = self._catalog
        return {"content_version": cat.content_version if cat else None,
                "fetched_at": self.fetched_at,
                "age_s": None if self.fetched_at is None
                else round(self.clock() - self.fetched_at, 1),
                "refreshing": self._task is not None and not self._task.done(),
                "error": self.error}

    async def refresh(self, force: bool = False) -> RemoteCatalog | None:
        """Ask the remote: everything (`force`), or only whether it changed since the
        copy held. Returns the catalog now held (None: none, or no `Catalog` backend).
        Errors propagate (the old copy stays)."""
        source = self.source
        if source is None:
            return None
        async with self._lock:
            known = None if force or self._catalog is None else self._catalog.content_version
            try:
                fresh = await source.catalog(known)
            except RemoteExecError as exc:
                self.error, self._failed_at = exc.message, self.clock()
                raise
            self.error, self._failed_at = None, None
            self.fetched_at = self.clock()
            if fresh is not None:
                self._catalog = fresh
            self._save()
            return self._catalog

    def refresh_soon(self, force: bool = False) -> asyncio.Task[RemoteCatalog | None] | None:
        """A background refresh (one at a time); failures are logged, not raised."""
        if not self.supported:
            return None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._quietly(force))
        return self._task

    async def _quietly(self, force: bool) -> RemoteCatalog | None:
        try:
            return await self.refresh(force)
        except RemoteExecError as exc:
            log.warning("could not read the remote's models and nodes: %s", exc.message)
        except Exception:
            log.exception("reading the remote's catalog")
        return self._catalog

    def note_version(self, version: object) -> None:
        """The remote reported its content_version: refresh if it is another one."""
        if not isinstance(version, str) or not version:
            return
        if self._catalog is None or self._catalog.content_version != version:
            self.refresh_soon()
        else:
            self.fetched_at = self.clock()  # confirmed current

    async def wait_current(self, timeout: float) -> RemoteCatalog | None:
        """The catalog, fetching it first (up to `timeout` s) when none is held; a
        stale one is served at once while it is checked in the background."""
        if self._catalog is None:
            failed = self._failed_at is not None and \
                self.clock() - self._failed_at < RETRY_AFTER
            task = self.refresh_soon()
            if task is not None and not failed and timeout > 0:  # just failed: no wait
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), timeout)
        elif self.stale():
            self.refresh_soon()
        return self._catalog

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- persistence --------------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._catalog = RemoteCatalog.from_dict(raw.get("catalog"))
            at = raw.get("fetched_at")
            self.fetched_at = float(at) if isinstance(at, (int, float)) else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError, RemoteExecError) as exc:
            log.warning("ignoring the saved remote catalog %s: %s", self.path, exc)

    def _save(self) -> None:
        if self._catalog is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"fetched_at": self.fetched_at,
                                          "catalog": self._catalog.to_dict()}, durable=False)
        except OSError as exc:
            log.warning("could not save the remote catalog: %s", exc)
