"""The Modal app's job API: the worker's aiohttp API, over Modal's parts.

The routes, views, auth and the job service are the worker's own
(`worker.app.build_app`, `JobService`); only the parts behind the service
differ: `ModalStore` (a Dict), `ModalExecutor` (the GPU class, its events
through a Queue), `VolumeStorage` (the data volume, where input blobs and
each job's files live). `open_api` assembles them and follows again the jobs
an earlier API container left running.

Modal cuts every web request at 150 s. Submitting returns at once (the GPU
call is spawned, not awaited). An event stream ends by itself after
`stream_limit` seconds (`ModalJobService.stream_batches`), cleanly, before Modal's
cut, and the client comes back with `after=` / `Last-Event-ID` for the rest
(the extension's client does). Large files travel in ranges.

`ApiThread` runs the API on its own event loop in a thread, for
`@modal.web_server`, which wants a server listening on a port, started from
a sync method.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiohttp import web

from ...protocol import Event
from ...worker.app import build_app
from ...worker.comfy.outputs import ComfyDirs
from ...worker.inputs.blobs import BlobStore
from ...worker.service.service import KEEP_JOBS, JobService
from .executor import IDLE, GpuFunctions, ModalExecutor
from .storage import VolumeStorage
from .store import ModalStore

T = TypeVar("T")

STREAM_LIMIT = 120.0  # seconds; Modal cuts web requests at 150


async def limited(events: AsyncIterator[T], seconds: float) -> AsyncIterator[T]:
    """`events` for at most `seconds`, then a clean end (the client resumes with `after=`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    iterator = events.__aiter__()
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                event = await asyncio.wait_for(iterator.__anext__(), left)
            except (StopAsyncIteration, asyncio.TimeoutError):
                return
            yield event
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class ModalJobService(JobService):
    """The job service, with event streams that end before Modal's request timeout."""

    stream_limit: float = STREAM_LIMIT

    def stream_batches(self, job_id: str, after: int = 0) -> AsyncIterator[Sequence[Event]]:
        return limited(super().stream_batches(job_id, after), self.stream_limit)


@dataclass
class ModalParts:
    """Modal's objects (or their stand-ins) the API works over."""

    store_dict: Any
    events: Any
    data_volume: Any  # its commit/reload
    data_root: Path  # where this container mounts the data volume
    gpu: GpuFunctions


@dataclass
class ModalApi:
    service: ModalJobService
    executor: ModalExecutor
    store: ModalStore
    app: web.Application
    http: httpx.AsyncClient

    async def close(self) -> None:
        await self.executor.close()
        await self.service.close()
        await self.store.close()
        await self.http.aclose()


async def open_api(parts: ModalParts, *, token: str | None,
                   stream_limit: float = STREAM_LIMIT, idle: float = IDLE,
                   keep_jobs: int = KEEP_JOBS, allow_private_urls: bool = False,
                   store_interval: float | None = None) -> ModalApi:
    store = await (ModalStore.open(parts.store_dict) if store_interval is None
                   else ModalStore.open(parts.store_dict, interval=store_interval))
    storage = VolumeStorage(parts.data_volume, parts.data_root)
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
    service = ModalJobService(store, BlobStore(storage.blob_dir), http, storage=storage,
                              keep_jobs=keep_jobs, allow_private_urls=allow_private_urls)
    service.stream_limit = stream_limit
    executor = ModalExecutor(parts.events, store, parts.gpu, idle=idle)
    service.attach(executor)
    executor.resume(service.jobs.values())
    app = build_app(service, ComfyDirs(parts.data_root), token, models=False)
    return ModalApi(service, executor, store, app, http)


class ApiThread:
    """The API on its own loop in a daemon thread, listening on `host:port`."""

    def __init__(self, open_: Callable[[], Awaitable[ModalApi]], host: str = "0.0.0.0",
                 port: int = 8000) -> None:
        self.open = open_
        self.host, self.port = host, port
        self.api: ModalApi | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="modal-api", daemon=True)

    def start(self, timeout: float = 120.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the API did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.api = await self.open()
            runner = web.AppRunner(self.api.app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self.api.close()
