"""The GPU container: the worker's runner on its own ComfyUI, one job per call.

What the Modal app's GPU class does, without `modal` (the class only wraps
these methods, and the local run of the Modal API calls them the same way):

- `prepare()` starts the supervised ComfyUI (`ComfyProcess`, with the
  worker's hooks and the models volume's paths). With memory snapshots it
  runs in `@modal.enter(snap=True)`, on a machine without a GPU, so ComfyUI
  is started CPU-only in snapshot mode (`snapshot.prepare_env`);
- `resume()` runs after the restore (`@modal.enter(snap=False)`): ComfyUI
  takes the GPU (`snapshot.restore`), the runner connects its WebSocket, the
  container reports its ComfyUI to the store (`comfy:info`) and starts
  watching its health;
- the container measures its own cold start (`protocol.timing`): from its
  process start (or, with a memory snapshot, the restore) to ComfyUI ready;
  its first job carries that span in its start message, so the API's job
  record counts it apart from the queue wait and the execution;
- `run(request)` is one job: the same `Runner.submit` the worker uses, with a
  `GpuSink` that sends the job's events to the API through the queue and
  publishes its files on the data volume. It waits for the job's end and
  returns `{status, error}`. When Modal cancels the call (the API's
  `FunctionCall.cancel()`), it cancels the run (ComfyUI's queue or an
  interrupt), waits for it to end, sends that end, and lets the cancel go on;
- a container whose ComfyUI fails its health probe and does not come back
  calls `on_unhealthy` (the app's `modal.experimental.stop_fetching_inputs()`)
  and refuses the job, which Modal retries elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...discovery import ComfyInstall
from ...errors import RemoteExecError, RemoteUnavailable
from ...protocol import CANCELLED, FAILED, Lifecycle, OutputFile
from ...protocol.timing import process_started_at
from ...worker.app import hook_args
from ...worker.comfy.comfy_process import ComfyProcess, ComfyProcessConfig
from ...worker.comfy.outputs import ComfyDirs
from ...worker.comfy.runner import Runner
from ...worker.inputs.blobs import BlobStore
from . import snapshot
from .sender import GpuSink, QueueSender
from .storage import VolumeStorage, publish_outputs
from .store import INFO_KEY

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 30.0
RESTART_GRACE = 90.0  # how long an unhealthy ComfyUI may take to come back
CANCEL_WAIT = 30.0  # how long a cancelled run may take to end


@dataclass
class GpuConfig:
    install: ComfyInstall
    base_dir: Path  # the ComfyUI's --base-directory (the container's own disk)
    state_dir: Path  # the hooks' config
    comfy_args: list[str] = field(default_factory=list)
    model_paths: Path | None = None  # extra_model_paths.yaml for the models volume
    env: dict[str, str] = field(default_factory=dict)
    snapshot: bool = False
    require_gpu: bool = True
    restart: bool = True
    health_interval: float = HEALTH_INTERVAL
    restart_grace: float = RESTART_GRACE


class GpuWorker:
    def __init__(self, config: GpuConfig, data: VolumeStorage, events: Any, store_dict: Any,
                 on_unhealthy: Callable[[], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.data = data
        self.events = events
        self.store_dict = store_dict
        self.on_unhealthy = on_unhealthy
        self.dirs = ComfyDirs(config.base_dir)
        extra = [*config.comfy_args, *hook_args(config.state_dir)]
        if config.model_paths is not None:
            extra += ["--extra-model-paths-config", str(config.model_paths)]
        env = snapshot.prepare_env(config.env) if config.snapshot else dict(config.env)
        self.process = ComfyProcess(ComfyProcessConfig(
            install=config.install, base_dir=config.base_dir, extra_args=extra, env=env,
            restart=config.restart))
        self.runner = Runner(self.process, self.dirs, BlobStore(data.blob_dir))
        self.unhealthy = False
        self.began = process_started_at()
        self.cold_start: tuple[float, float] | None = None  # until the first job takes it
        self.restored: dict[str, Any] = {}
        self._published: dict[str, Any] | None = None
        self._watch: asyncio.Task[None] | None = None

    # -- the container's life ---------------------------------------------------------

    async def prepare(self) -> None:
        """Start ComfyUI (before the memory snapshot, if there is one)."""
        self.config.base_dir.mkdir(parents=True, exist_ok=True)
        await self.process.start()
        if self.config.snapshot:  # a snapshot of a ComfyUI that asked CUDA would lack a GPU
            await snapshot.check_held(self.process.url)

    async def resume(self) -> None:
        """After the restore: ComfyUI takes the GPU; the runner connects; report."""
        if self.config.snapshot and self.process.healthy:
            self.began = time.time()  # restored: this container's life starts here
        if not self.process.healthy:
            await self.prepare()
        elif self.config.snapshot:
            self.restored = await snapshot.restore(self.process.url,
                                                   require_gpu=self.config.require_gpu)
        await self.runner.start()
        self.cold_start = (self.began, time.time())
        try:
            await self.describe()
        except RemoteExecError as exc:
            log.warning("could not report this container's ComfyUI: %s", exc)
        self._watch = asyncio.get_running_loop().create_task(self._watch_health(),
                                                             name="comfyui-health")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.runner.stop()

    # -- health -----------------------------------------------------------------------

    async def check_health(self) -> bool:
        """ComfyUI answers, or comes back within `restart_grace` (its supervisor restarts
        it after a crash)."""
        if await self.process.probe():
            return True
        try:
            await self.process.ensure_healthy(timeout=self.config.restart_grace)
            return True
        except RemoteUnavailable:
            return False

    async def _give_up(self) -> None:
        if self.unhealthy:
            return
        self.unhealthy = True
        log.error("ComfyUI failed its health probe and did not come back; this container "
                  "takes no more jobs. Its last log lines:\n%s",
                  "\n".join(self.process.tail(30)))
        if self.on_unhealthy is not None:
            await self.on_unhealthy()

    async def _watch_health(self) -> None:
        while not self.unhealthy:
            await asyncio.sleep(self.config.health_interval)
            if not await self.check_health():
                await self._give_up()

    # -- one job ----------------------------------------------------------------------

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        job_id = str(request["job_id"])
        if self.unhealthy or not await self.check_health():
            await self._give_up()
            raise RemoteUnavailable("this GPU container's ComfyUI is unhealthy",
                                    code="comfyui_unhealthy", retryable=True, job_id=job_id,
                                    log_tail=self.process.tail())
        life = Lifecycle()

        async def publish(files: list[OutputFile]) -> None:
            await publish_outputs(self.data, job_id, files, self.dirs)

        sender = QueueSender(self.events, job_id, publish)
        sink = GpuSink(life, sender, self.cold_start)
        self.cold_start = None
        try:
            try:
                await self.data.refresh()  # the inputs the API uploaded
                await self.runner.submit(
                    job_id, request["workflow"], dict(request.get("media") or {}), life=life,
                    sink=sink, priority=int(request.get("priority") or 0),
                    targets=request.get("targets"),
                    url_prefix=str(request.get("url_prefix") or ""),
                    extra_data=request.get("extra_data") or {},
                    prompt_id=request.get("prompt_id"))
            except RemoteExecError as exc:  # ComfyUI refused the prompt, a model is missing
                exc.job_id = job_id
                if life.end(FAILED, exc):
                    await sink.changed()
            await sink.ended.wait()
        except asyncio.CancelledError:
            await self._cancelled(job_id, life, sink)
            raise
        finally:
            await sender.close()
        await self._report_if_changed()
        return {"status": life.status, "error": life.error.to_dict() if life.error else None}

    async def _cancelled(self, job_id: str, life: Lifecycle, sink: GpuSink) -> None:
        """Modal cancelled the call: stop the run and wait for its end to be sent."""
        try:
            held = await self.runner.cancel(job_id)
        except RemoteExecError as exc:
            log.warning("job %s: cancelling on ComfyUI failed: %s", job_id, exc)
            held = False
        if held:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sink.ended.wait(), CANCEL_WAIT)
        if life.end(CANCELLED):
            await sink.changed()

    # -- what this container's ComfyUI offers -------------------------------------------

    async def describe(self) -> dict[str, Any]:
        """object_info, system_stats and the model files per folder; also written to the
        store, where the API answers `/v1/object_info` and `/health?deep` from."""
        object_info = await self.runner.object_info(refresh=True)
        report = await self.runner.report()
        info = {"object_info": object_info, "system_stats": report.get("system_stats"),
                "models": report.get("models"), "at": time.time()}
        self._published = object_info
        try:
            await self.store_dict.put.aio(INFO_KEY, info)
        except Exception as exc:  # too large for the Dict, or a hiccup: served on request
            log.warning("could not store this ComfyUI's report: %s", exc)
        return info

    async def _report_if_changed(self) -> None:
        """After a job: report again if the runner re-read ComfyUI's node list (a model
        lookup missed, or ComfyUI restarted)."""
        with contextlib.suppress(RemoteExecError):
            if await self.runner.object_info() is not self._published:
                await self.describe()
