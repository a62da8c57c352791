"""RunPod serverless handler: our worker behind `runpod.serverless.start`.

`python -m comfy_remote_exec.platforms.runpod.handler` starts the worker (and
so ComfyUI) once, when the container starts, and then hands RunPod an async
generator that drives it over loopback with the same `HttpBackend` the
extension uses. Each job's wire events go out as stream chunks of at most
1 MB (previews downscaled to fit); output files travel inline as base64 while
they fit, through presigned S3 URLs when a bucket is configured, else in
`file_part` chunks. A worker-comfyui request (`{"workflow", "images"}`) gets
a worker-comfyui answer (`{"images": [...]}`). Cancellation through the SDK's
stop channel cancels the job on the worker, which interrupts ComfyUI.

Decision (for now): the handler runs the worker as a subprocess
(`python -m comfy_remote_exec.worker`, through `jobapi.spawn`) and talks to
it over the job API, rather than calling the job service in-process. Why:
- RunPod then runs exactly the worker every other host runs, and the handler
  drives jobs only through the job API, the contract the worker's and the
  `http` backend's tests hold it to (it reads output files from the shared
  base directory to send them on).
- `runpod.serverless.start` blocks in an event loop of its own
  (`asyncio.run`). An in-process job service and runner could only start
  inside that loop, on the first job, and would share it with the SDK's job
  intake and streaming; as a process, the worker (its server, the ComfyUI
  it supervises and restarts) is up and healthy before the SDK takes a job.
The cost: every event and status crosses a loopback HTTP/SSE hop (part of
`relay_p95_ms_runpod`), a per-container token guards the loopback port, and
this module imports `backends.http` (platforms may import both sides; `worker/`
and `backends/` never import each other, `tests/test_layering.py`). Calling
the job service in-process would drop the hop and the token; whether to is
left open.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import os
import secrets
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from PIL import Image

from ...backends.http import HttpBackend
from ...discovery import find_comfyui
from ...errors import RemoteExecError
from ...jobapi.spawn import echo, start_worker, stop_worker, worker_command
from ...logsafe import hide_url_queries
from ...protocol import JOB_STATUS, PREVIEW, Event, JobSpec
from ...worker.comfy.outputs import ComfyDirs
from ...worker.service.storage import S3Storage

log = logging.getLogger(__name__)

CHUNK_LIMIT = 1_000_000
PART_BYTES = 600 * 1024
PREVIEW_LIMIT = 200 * 1024
PROGRESS_INTERVAL = 1.0


def inline_limit() -> int:
    return int(os.environ.get("REMOTE_EXEC_INLINE_LIMIT", str(8 * 1024 * 1024)))


def is_worker_comfyui(body: dict[str, Any]) -> bool:
    return "workflow" in body and "media" not in body and (
        "images" in body or set(body) <= {"workflow", "images"})


def from_worker_comfyui(body: dict[str, Any]) -> dict[str, Any]:
    """worker-comfyui's `{"workflow", "images": [{"name", "image"}]}` as our job spec."""
    images = body.get("images") or []
    media = [{"name": img.get("name"), "data": img.get("image")}
             for img in images if isinstance(img, dict)]
    return {"workflow": body.get("workflow"), "media": media}


def shrink_preview(data: dict[str, Any]) -> dict[str, Any]:
    """A preview small enough for a stream chunk (JPEG, at most 512 px)."""
    if len(data.get("image") or "") <= PREVIEW_LIMIT:
        return data
    with Image.open(io.BytesIO(base64.b64decode(data["image"]))) as img:
        img.thumbnail((512, 512))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=70)
    return {**data, "image": base64.b64encode(buf.getvalue()).decode(),
            "image_type": "image/jpeg"}


class RunpodHandler:
    def __init__(self, backend: HttpBackend, dirs: ComfyDirs, storage: S3Storage | None,
                 progress: Callable[[dict[str, Any], Any], None] | None = None) -> None:
        self.backend = backend
        self.dirs = dirs
        self.storage = storage
        self.progress = progress
        self.started = time.monotonic()
        self.jobs_seen = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if self.jobs_seen == 0:
            log.info("cold start: first job after %.1f s", time.monotonic() - self.started)
        self.jobs_seen += 1
        body = job.get("input") or {}
        if body.get("op") == "blobs":
            yield await self.blobs_op(body)
            return
        compat = is_worker_comfyui(body)
        try:
            spec = JobSpec.parse(from_worker_comfyui(body) if compat else body)
            remote_id = await self.backend.submit(await self.fetch_stored_inputs(spec))
        except RemoteExecError as exc:
            yield {"error": exc.message if compat else json.dumps(exc.to_dict())}
            return
        finished = False
        end: dict[str, Any] = {}
        images: list[dict[str, Any]] = []
        try:
            async for chunk in self.relay(job, remote_id):
                for event in chunk.get("events", []):
                    if event["type"] == "executed":
                        images += [f for f in event["data"].get("files") or []
                                   if f["type"] == "output" and f["kind"] == "image"]
                    elif event["type"] == JOB_STATUS:
                        end = event["data"]
                if not compat:  # a worker-comfyui client wants only the final answer
                    yield chunk
            async for final in self.finish(end, compat, images):
                yield final
            finished = True
        finally:
            # Stopped by the SDK: a CancelledError here, or, when the stop landed while
            # the SDK itself was posting a chunk, GeneratorExit at our `yield` later.
            if not finished:
                self._spawn(self.backend.cancel(remote_id))

    async def relay(self, job: dict[str, Any], remote_id: str
                    ) -> AsyncIterator[dict[str, Any]]:
        """The job's events as stream chunks (`events`, and `file_part` before the
        `executed` that needs them), up to and including its terminal status."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for event in self.backend.events(remote_id):
                    await queue.put(event)
            finally:
                await queue.put(None)

        reader = asyncio.create_task(read())
        inline_left = inline_limit()
        last_progress = 0.0
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                chunk: list[dict[str, Any]] = []
                size = 0
                for event in batch:
                    if event is None:
                        if chunk:
                            yield {"events": chunk}
                        reader.result()  # re-raise a failure of the event stream
                        return
                    if event.type == PREVIEW:
                        event.data = shrink_preview(event.data)
                    elif event.type == "progress" and self.progress is not None:
                        now = time.monotonic()
                        if now - last_progress >= PROGRESS_INTERVAL:
                            last_progress = now
                            self.progress(job, {"node": event.data.get("node"),
                                                "value": event.data.get("value"),
                                                "max": event.data.get("max")})
                    elif event.type == "executed":
                        for file in event.data.get("files") or []:
                            inline_left, parts = await self.attach(file, inline_left)
                            for part in parts:
                                yield {"file_part": part}
                    encoded = event.to_dict()
                    length = len(json.dumps(encoded))
                    if chunk and size + length > CHUNK_LIMIT:
                        yield {"events": chunk}
                        chunk, size = [], 0
                    chunk.append(encoded)
                    size += length
                    if event.terminal:
                        yield {"events": chunk}
                        return
                if chunk:
                    yield {"events": chunk}
        finally:
            reader.cancel()

    async def finish(self, end: dict[str, Any], compat: bool, images: list[dict[str, Any]]
                     ) -> AsyncIterator[dict[str, Any]]:
        """The last chunk: worker-comfyui's answer, or the error that makes RunPod mark
        the job FAILED."""
        status, error = end.get("status"), end.get("error") or {}
        if compat:
            if status == "completed":
                yield {"images": [{"filename": f["filename"],
                                   "type": "base64" if "data" in f else "s3_url",
                                   "data": f.get("data") or f.get("download_url")}
                                  for f in images]}
            else:
                yield {"error": error.get("message") or f"job {status}"}
        elif status == "failed":
            yield {"error": json.dumps(error)}

    async def attach(self, file: dict[str, Any], inline_left: int
                     ) -> tuple[int, list[dict[str, Any]]]:
        """Give `file` its transport: inline `data`, a `download_url`, or `parts`."""
        path = self.dirs.resolve(file["type"], file["subfolder"], file["filename"])
        size = int(file["size"])
        if size <= PART_BYTES and size <= inline_left:
            file["data"] = base64.b64encode(await asyncio.to_thread(path.read_bytes)).decode()
            return inline_left - size, []
        if self.storage is not None:
            key = f"outputs/{file['sha256']}/{file['filename']}"
            file["download_url"] = await self.storage.put_file(key, path)
            return inline_left, []
        data = await asyncio.to_thread(path.read_bytes)
        count = math.ceil(len(data) / PART_BYTES)
        file["parts"] = count
        return inline_left, [
            {"sha256": file["sha256"], "index": i,
             "data": base64.b64encode(data[i * PART_BYTES:(i + 1) * PART_BYTES]).decode()}
            for i in range(count)]

    async def fetch_stored_inputs(self, spec: JobSpec) -> JobSpec:
        """Inputs referenced by hash that the worker lacks come from the bucket."""
        missing = await self.backend.missing_blobs([m.sha256 for m in spec.media if m.sha256])
        if missing and self.storage is not None:
            for item in spec.media:
                if item.sha256 in missing and await self.storage.exists(f"blobs/{item.sha256}"):
                    item.url = await self.storage.download_url(f"blobs/{item.sha256}")
                    item.sha256 = None
        return spec

    async def blobs_op(self, body: dict[str, Any]) -> dict[str, Any]:
        """`{"op": "blobs", "sha256": [...]}`: what is missing, with upload URLs for it."""
        hashes = [h for h in body.get("sha256") or [] if isinstance(h, str)]
        missing = await self.backend.missing_blobs(hashes)
        uploads = {}
        if self.storage is not None:
            still = []
            for sha in missing:
                if await self.storage.exists(f"blobs/{sha}"):
                    continue
                still.append(sha)
                uploads[sha] = await self.storage.upload_url(f"blobs/{sha}")
            missing = still
        return {"missing": missing, "uploads": uploads}


def main() -> None:  # pragma: no cover - exercised by the emulator tests in a subprocess
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    hide_url_queries()
    install = find_comfyui(python=os.environ.get("COMFYUI_PYTHON") or None)
    base = Path(os.environ.get("REMOTE_EXEC_BASE_DIR", "/comfyui-base"))
    token = secrets.token_urlsafe(24)
    extra = []
    if os.environ.get("REMOTE_EXEC_BLOB_DIR"):
        extra += ["--blob-dir", os.environ["REMOTE_EXEC_BLOB_DIR"]]
    if os.environ.get("REMOTE_EXEC_ALLOW_PRIVATE_URLS") == "1":
        extra.append("--allow-private-urls")
    cmd = worker_command(python=sys.executable, comfyui=install.root,
                         comfy_python=install.python, base_dir=base,
                         token_env="REMOTE_EXEC_WORKER_TOKEN", extra=extra,
                         comfy_args=shlex.split(os.environ.get("REMOTE_EXEC_COMFY_ARGS", "")))
    worker, url = start_worker(cmd, env={**os.environ, "REMOTE_EXEC_WORKER_TOKEN": token},
                               sink=echo)

    import runpod  # the SDK reads its RUNPOD_* settings at import time

    handler = RunpodHandler(HttpBackend(url, token), ComfyDirs(base), S3Storage.from_env(),
                            progress=runpod.serverless.progress_update)
    # Jobs this worker holds at once. ComfyUI still runs one at a time, but with 2 the
    # next job already waits in ComfyUI's queue when one ends: with 1, the SDK idles up
    # to a second between jobs ("Queue is full. Retrying soon."). 1 spreads long jobs
    # more evenly over workers.
    slots = max(1, int(os.environ.get("REMOTE_EXEC_RUNPOD_CONCURRENCY", "2")))
    try:
        runpod.serverless.start({"handler": handler.handle, "return_aggregate_stream": True,
                                 "concurrency_modifier": lambda current: slots})
    finally:
        stop_worker(worker)


if __name__ == "__main__":
    main()
