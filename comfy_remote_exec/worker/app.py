"""Assemble the worker: ComfyUI process, runner, job service and HTTP app.

`Worker` is the one object a host needs: `await worker.start()` brings up
ComfyUI and the runner, `worker.app` is the aiohttp application to serve, and
`await worker.stop()` tears everything down. The RunPod handler runs this
worker as a process; the Modal app takes its pieces apart (`build_app` over a
job service with Modal's parts, `hook_args` for the runner's ComfyUI in the
GPU container).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web

from ..comfy_env import custom_nodes_config
from ..discovery import ComfyInstall
from ..protocol import MAX_MEDIA_BYTES, MAX_MEDIA_ITEMS
from ..protocol.timing import process_started_at
from .api.api import (
    DIRS,
    SERVICE,
    add_routes,
    auth_middleware,
    error_middleware,
    protocol_middleware,
)
from .api.compat import add_compat_routes
from .api.models import MODELS, add_model_routes
from .comfy.comfy_process import ComfyProcess, ComfyProcessConfig
from .comfy.outputs import ComfyDirs
from .comfy.runner import Runner
from .inputs.blobs import BlobStore
from .service.jobs import JobStore
from .service.models import ModelFiles
from .service.service import KEEP_JOBS, JobService

# A job body may carry MAX_MEDIA_ITEMS files of MAX_MEDIA_BYTES each, base64-encoded.
MAX_BODY = MAX_MEDIA_ITEMS * MAX_MEDIA_BYTES * 4 // 3 + 16 * 1024 * 1024


@dataclass
class WorkerConfig:
    install: ComfyInstall
    base_dir: Path
    token: str | None = None
    comfy_args: list[str] = field(default_factory=list)
    comfy_port: int = 0
    state_dir: Path | None = None
    blob_dir: Path | None = None
    allow_private_urls: bool = False
    max_media_bytes: int = MAX_MEDIA_BYTES
    keep_jobs: int = KEEP_JOBS


class Worker:
    def __init__(self, config: WorkerConfig, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        base = config.base_dir.resolve()
        state = config.state_dir or base / "remote_exec"
        self.dirs = ComfyDirs(base)
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        self.blobs = BlobStore(config.blob_dir or state / "blobs")
        self.service = JobService(JobStore(state / "jobs"), self.blobs, self.http,
                                  allow_private_urls=config.allow_private_urls,
                                  max_media_bytes=config.max_media_bytes,
                                  keep_jobs=config.keep_jobs)
        self.process = ComfyProcess(ComfyProcessConfig(
            install=config.install, base_dir=base, port=config.comfy_port,
            extra_args=[*config.comfy_args, *hook_args(state)]))
        self.runner = Runner(self.process, self.dirs, self.blobs)
        self.service.attach(self.runner)
        self.app = build_app(self.service, self.dirs, config.token)

    async def start(self) -> None:
        self.dirs.base.mkdir(parents=True, exist_ok=True)
        await self.runner.start()
        self.service.cold_started(process_started_at(), time.time())

    async def stop(self) -> None:
        await self.runner.stop()
        await self.service.close()
        await self.http.aclose()


# The worker's ComfyUI hooks, loaded beside the base directory's own custom nodes.
HOOK_NODES = Path(__file__).resolve().parent / "comfy" / "comfyui_nodes"


def hook_args(state: Path) -> list[str]:
    """ComfyUI arguments that load the worker's hooks (written under `state`)."""
    return ["--extra-model-paths-config", str(custom_nodes_config(
        state / "comfyui_hooks.yaml", "comfy_remote_exec_worker", HOOK_NODES))]


def build_app(service: JobService, dirs: ComfyDirs, token: str | None, *,
              models: bool = True) -> web.Application:
    """The job API over `service`: the worker's, and the Modal app's over Modal's parts
    (`models=False`: its API holds no model folder, `PUT /v1/models` answers 501)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[
        error_middleware, auth_middleware(token), protocol_middleware])
    app[SERVICE] = service
    app[DIRS] = dirs
    app[MODELS] = ModelFiles(dirs.base / "models", service.blobs, service.models_changed,
                             enabled=models)
    routes = web.RouteTableDef()
    add_routes(routes)
    add_compat_routes(routes)
    add_model_routes(routes)
    app.add_routes(routes)
    return app


def token_from_env(name: str | None) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"--token-env {name}: that environment variable is empty or unset")
    return value
