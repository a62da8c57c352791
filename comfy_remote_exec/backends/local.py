"""Backend `local`: the same worker, on this machine.

If a worker is already running (the launcher starts one and passes its URL),
this is the http backend pointed at it. Otherwise this backend starts a
worker with its own base directory, so local inputs and outputs stay apart
from the worker's exactly as with a real remote, and `close()` stops it.

When is it started? As early as possible: ComfyUI's prestartup hook (see
`extension/prestart.py`) spawns it before ComfyUI imports torch, so both
start side by side and the first Run does not wait for a second ComfyUI
(ComfyUI's own test suite starts a server per test class, and waited about
5 s each). The backend then adopts that process if its command is the one it
would have run; a prestarted worker nobody adopts is stopped at shutdown.
Failing that, the extension's start-up warms it up, or the first job does.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ..errors import RemoteUnavailable
from ..jobapi.spawn import (
    StartingWorker,
    WorkerStartError,
    start_worker,
    stop_worker,
    worker_command,
)
from ..protocol import Event, JobSpec, OutputFile
from ..protocol.catalog import RemoteCatalog
from .base import ShipResult, Submitted
from .http import HttpBackend
from .registry import BackendContext, BackendSpec, register

log = logging.getLogger(__name__)

# Workers started at ComfyUI's prestartup, by their command, until a backend adopts one.
_prestarted: dict[tuple[str, ...], StartingWorker] = {}


class LocalBackend:
    name = "local"
    ships_models = True
    catalog_max_age = HttpBackend.catalog_max_age

    def __init__(self, *, url: str | None, comfyui: Path, worker_dir: Path,
                 token: str | None = None, client: httpx.AsyncClient | None = None,
                 comfy_args: Sequence[str] = ()) -> None:
        self.comfyui = comfyui
        self.worker_dir = worker_dir
        self.token = token
        self.client = client
        self.comfy_args = list(comfy_args)  # its factory reads REMOTE_EXEC_WORKER_ARGS
        self._http = HttpBackend(url, token, client) if url else None
        self._proc: subprocess.Popen[str] | None = None
        self._lock = asyncio.Lock()

    async def _backend(self) -> HttpBackend:
        if self._http is not None:
            return self._http
        async with self._lock:
            if self._http is None:
                cmd = self.command()
                early = _prestarted.pop(tuple(cmd), None)
                try:
                    if early is not None:
                        self._proc = early.proc
                        url = await asyncio.to_thread(early.wait)
                    else:
                        self.worker_dir.mkdir(parents=True, exist_ok=True)
                        self._proc, url = await asyncio.to_thread(start_worker, cmd)
                except WorkerStartError as exc:
                    raise RemoteUnavailable(str(exc), code="local_worker_failed") from None
                self._http = HttpBackend(url, self.token, self.client)
        return self._http

    def command(self) -> list[str]:
        """The worker this backend starts: ComfyUI's Python, its own base directory."""
        return worker_command(python=sys.executable, comfyui=self.comfyui,
                              comfy_python=sys.executable, base_dir=self.worker_dir,
                              comfy_args=self.comfy_args)

    def prestart(self) -> None:
        """Spawn the worker now, for `_backend` to adopt (see the module's docstring)."""
        if self._http is not None:
            return  # the launcher's worker
        cmd = self.command()
        if tuple(cmd) not in _prestarted:
            self.worker_dir.mkdir(parents=True, exist_ok=True)
            _prestarted[tuple(cmd)] = StartingWorker(cmd)

    async def warm_up(self) -> None:
        """Start the worker now (if this backend starts its own); failures wait for a job,
        which reports them."""
        try:
            await self._backend()
        except RemoteUnavailable as exc:
            log.warning("the local worker did not start: %s", exc)

    async def submit(self, spec: JobSpec, files: Mapping[str, Path]) -> Submitted:
        return await (await self._backend()).submit(spec, files)

    def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        # The worker's own stream when it runs (no stop here on an event's way).
        if self._http is not None:
            return self._http.events(job_id, after)
        return self._events_once_started(job_id, after)

    async def _events_once_started(self, job_id: str, after: int) -> AsyncIterator[Event]:
        async for event in (await self._backend()).events(job_id, after):
            yield event

    async def cancel(self, job_id: str) -> None:
        await (await self._backend()).cancel(job_id)

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        await (await self._backend()).download(job_id, output, dest)

    async def ship_model(self, folder: str, name: str, path: Path, sha256: str,
                         progress: Callable[[int, int], None] | None = None) -> ShipResult:
        """`ModelStore`: the worker's (started first if it is not running)."""
        return await (await self._backend()).ship_model(folder, name, path, sha256, progress)

    async def catalog(self, known_version: str | None) -> RemoteCatalog | None:
        return await (await self._backend()).catalog(known_version)

    async def model_hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        return await (await self._backend()).model_hashes(folder, names)

    async def preflight_hashes(self, folder: str, names: list[str]
                               ) -> dict[str, str | None] | None:
        return await self.model_hashes(folder, names)

    async def health(self) -> dict[str, Any]:
        if self._http is None:
            return {"status": "idle", "detail": "the local worker starts with the first job"}
        return await self._http.health()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            await asyncio.to_thread(stop_worker, self._proc)


def _discard() -> None:
    """Stop the prestarted workers no backend adopted (settings changed since)."""
    while _prestarted:
        stop_worker(_prestarted.popitem()[1].proc)


def _make(ctx: BackendContext) -> LocalBackend:
    # The launcher's own worker comes with its URL; else this backend starts one, which
    # caches as this ComfyUI does (its --cache-* flags).
    worker_args = shlex.split(ctx.env.get("REMOTE_EXEC_WORKER_ARGS", ""))
    return LocalBackend(url=ctx.url, comfyui=ctx.comfyui_root,
                        worker_dir=ctx.state_dir / "worker", token=ctx.token,
                        comfy_args=[*worker_args, *ctx.comfy_args])


register(BackendSpec("local", "a worker on this machine, with its own ComfyUI (no account "
                     "needed)", _make, endpoint="", order=0,
                     prestart=lambda ctx: _make(ctx).prestart(), discard=_discard))
