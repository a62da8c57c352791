"""A worker's job API on loopback with no ComfyUI behind: blobs and the model store.

Shipping models needs only the blob route and `PUT /v1/models`; the real app
(`worker.app.build_app`) serves them over a real `JobService` and `BlobStore`,
with an executor that stands for the runner only as far as the model store
reaches it (its object_info cache). `CountingTransport` counts the bytes a
client puts on the wire (request lines, headers and bodies).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.errors import BadRequest
from comfy_remote_exec.worker.app import build_app
from comfy_remote_exec.worker.comfy.models import ModelFile
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.service.jobs import JobStore
from comfy_remote_exec.worker.service.service import JobService

TOKEN = "model-token"


class ModelsOnlyExecutor:
    healthy = True

    def __init__(self, models: Path) -> None:
        self.models = models
        self.forgotten = 0
        self.info: dict[str, Any] = {}  # the object_info it answers

    async def submit(self, job_id: str, *args: Any, **kwargs: Any) -> str:
        raise BadRequest("this stand-in worker runs no ComfyUI", code="no_comfyui")

    async def model_files(self) -> dict[str, list[ModelFile]]:
        """The files under `models/<folder>`, as the runner lists ComfyUI's."""
        out: dict[str, list[ModelFile]] = {}
        for folder in sorted(self.models.iterdir()) if self.models.is_dir() else []:
            out[folder.name] = [ModelFile(p.relative_to(folder).as_posix(), p.stat().st_size, p)
                                for p in sorted(folder.rglob("*")) if p.is_file()
                                and not p.name.startswith(".")]
        return out

    def active(self) -> int:
        return 0

    def forget_object_info(self) -> None:
        self.forgotten += 1

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        return self.info


@dataclass
class ModelWorker:
    url: str
    models: Path
    blobs: BlobStore
    executor: ModelsOnlyExecutor
    requests: list[str]  # "METHOD /path" of every request served


@contextlib.asynccontextmanager
async def model_worker(root: Path) -> AsyncIterator[ModelWorker]:
    async with httpx.AsyncClient() as http:
        blobs = BlobStore(root / "blobs", max_bytes=16 * 1024**3)
        service = JobService(JobStore(root / "jobs"), blobs, http)
        executor = ModelsOnlyExecutor(root / "base" / "models")
        service.attach(executor)  # type: ignore[arg-type]
        app = build_app(service, ComfyDirs(root / "base"), TOKEN)
        requests: list[str] = []

        async def seen(request: web.Request, _resp: web.StreamResponse) -> None:
            requests.append(f"{request.method} {request.path}")

        app.on_response_prepare.append(seen)
        async with TestServer(app) as server:
            yield ModelWorker(str(server.make_url("")).rstrip("/"), root / "base" / "models",
                              blobs, executor, requests)


class _CountedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, transport: CountingTransport) -> None:
        self.inner, self.transport = inner, transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.transport.sent += len(chunk)
            yield chunk


class CountingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, counting every request byte it is handed."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += len(request.method) + len(request.url.raw_path) + 12
        self.sent += sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        request.stream = _CountedStream(request.stream, self)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class LocalHost:
    """The extension's Host without ComfyUI: local models under `root/models`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.history: dict[str, Any] = {}

    input_dir = property(lambda self: self.root / "input")
    output_dir = property(lambda self: self.root / "output")
    temp_dir = property(lambda self: self.root / "temp")
    comfyui_root = property(lambda self: self.root)

    def model_path(self, folder: str, name: str) -> Path | None:
        path = self.root / "models" / folder / name
        return path if path.is_file() else None

    def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        self.sent.append((event, data))

    def send_preview(self, *args: Any) -> None: ...
    def next_number(self, front: bool) -> int: return 1
    def on_prompt(self, body: dict[str, Any]) -> dict[str, Any]: return body
    def check_prompt_id(self, value: object) -> str: return str(value)
    async def validate(self, *args: Any) -> None: return None
    def cache_args(self) -> list[str]: return []
    def has_jobs_api(self) -> bool: return False
    def queue_changed(self) -> None: ...
    def settings(self, user: str = "default") -> dict[str, Any]: return {}
    def request_user(self, request: Any) -> str: return "default"

    def add_history(self, prompt_id: str, entry: dict[str, Any]) -> None:
        self.history[prompt_id] = entry
