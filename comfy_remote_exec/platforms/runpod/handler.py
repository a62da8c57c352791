"""RunPod serverless handler: our worker behind `runpod.serverless.start`.

`python -m comfy_remote_exec.platforms.runpod.handler` starts the worker (and
so ComfyUI) once, when the container starts, and then hands RunPod an async
generator that drives it over loopback with `jobapi.client.JobApiClient`,
the job-API client the extension's `http` backend uses too. Each job's typed
events go out as `protocol.runpod` chunks of at most 1 MB (previews
downscaled to fit); output files travel inline as base64 while they fit,
through presigned S3 URLs when a bucket is configured, else in `file_part`
chunks. A job whose input names a protocol version (`"protocol"`) this side
does not speak is answered with an `ErrorChunk` (`protocol_mismatch`); inputs
that name none (worker-comfyui's and other existing clients) are served as
they are. A worker-comfyui request (`{"workflow", "images"}`) gets a
worker-comfyui answer (`{"images": [...]}`). Cancellation through the SDK's
stop channel cancels the job on the worker, which interrupts ComfyUI.

Decision: the handler runs the worker as a subprocess
(`python -m comfy_remote_exec.worker`, through `jobapi.spawn`) and talks to
it over the job API; it does not call the job service in-process. Why:
- RunPod runs exactly the worker every other host runs, driven only through
  the job API, the contract the worker's and the `http` backend's tests hold
  it to; this module imports nothing of `backends` and, of the worker, only
  its folder layout (`ComfyDirs`) and bucket client (`S3Storage`).
- `runpod.serverless.start` owns the process's event loop (`asyncio.run`). An
  in-process job service and runner could only start inside that loop, on the
  first job, and would share it with the SDK's job intake and streaming. As a
  process, the worker (its server, and the ComfyUI it supervises and
  restarts) is up and healthy before the SDK takes a job.
- The loopback hop is cheap: from the worker's event log over its SSE stream
  into a `JobApiClient`, an event takes 0.5 ms (median) and 1.5 ms (p95),
  measured over 650 progress events of a CPU ComfyUI; RunPod's `/stream`,
  polled every 50 ms by the `runpod` backend, adds 25 ms on average.
The price is that hop and a per-container token on the loopback port.

GPU seconds: the handler knows the container's cold start (its own process
start → the worker and its ComfyUI ready), a longer span than the worker's
own; the first job's terminal `job_status` carries it as `cold_start_s`, so
the `runpod` backend can split RunPod's `delayTime` into cold start and
queue wait (`protocol.runpod.runpod_timing`).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import secrets
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...discovery import find_comfyui
from ...errors import RemoteExecError
from ...jobapi.client import JobApiClient
from ...jobapi.spawn import echo, start_worker, stop_worker, worker_command
from ...logsafe import hide_url_queries
from ...protocol import (
    COMPLETED,
    FAILED,
    Event,
    Executed,
    JobSpec,
    JobStatus,
    JobTiming,
    JsonObject,
    OutputFile,
    Preview,
    Progress,
    ProtocolMismatch,
    b64encode,
    check_version,
)
from ...protocol.catalog import (
    DESCRIBE,
    MODEL_HASHES,
    RemoteCatalog,
    models_from_dict,
    pack_catalog,
)
from ...protocol.runpod import BlobsAnswer, BlobsRequest, ErrorChunk, EventsChunk, FilePart
from ...protocol.timing import process_started_at
from ...worker.comfy.outputs import ComfyDirs
from ...worker.service.storage import S3Storage

log = logging.getLogger(__name__)

CHUNK_LIMIT = 1_000_000  # bytes of JSON per stream chunk
PART_BYTES = 600 * 1024  # file bytes per `file_part` (base64 adds a third)
PREVIEW_LIMIT = 150 * 1024  # preview bytes sent as they are; larger ones are shrunk
PROGRESS_INTERVAL = 1.0

ProgressHook = Callable[[dict[str, Any], dict[str, Any]], None]


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


def shrink_preview(preview: Preview) -> Preview:
    """A preview small enough for a stream chunk: as it is, or a JPEG of at most 512 px."""
    if len(preview.image) <= PREVIEW_LIMIT:
        return preview
    from PIL import Image  # only for a frame over the limit

    with Image.open(io.BytesIO(preview.image)) as img:
        img.thumbnail((512, 512))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=70)
    preview.image, preview.image_type = buf.getvalue(), "image/jpeg"
    return preview


def compat_answer(end: JobStatus | None, images: list[OutputFile]) -> JsonObject:
    """worker-comfyui's last chunk: its `images` answer, or its error string."""
    if end is not None and end.status == COMPLETED:
        return {"images": [{"filename": f.filename,
                            "type": "base64" if f.data is not None else "s3_url",
                            "data": f.data if f.data is not None else f.download_url}
                           for f in images]}
    error = end.error if end is not None else None
    return {"error": error.message if error else f"job {end.status if end else 'lost'}"}


class RunpodHandler:
    def __init__(self, api: JobApiClient, dirs: ComfyDirs, storage: S3Storage | None,
                 progress: ProgressHook | None = None,
                 cold_start: tuple[float, float] | None = None) -> None:
        self.api = api
        self.cold_start = cold_start  # (process start, ready), until a job's end claims it
        self.dirs = dirs
        self.storage = storage
        self.progress = progress
        self.started = time.monotonic()
        self.jobs_seen = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, job: dict[str, Any]) -> AsyncIterator[JsonObject]:
        if self.jobs_seen == 0:
            log.info("cold start: first job after %.1f s", time.monotonic() - self.started)
        self.jobs_seen += 1
        raw = job.get("input")
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if "protocol" in body:
            try:
                check_version(body["protocol"], peer="client")
            except ProtocolMismatch as exc:
                yield ErrorChunk(exc).to_wire()
                return
        blobs = BlobsRequest.parse(body)
        if blobs is not None:
            yield (await self.blobs_op(blobs)).to_wire()
            return
        if body.get("action") in (DESCRIBE, MODEL_HASHES):
            try:
                for answer in await self.catalog_op(body):
                    yield answer
            except RemoteExecError as exc:
                yield ErrorChunk(exc).to_wire()
            return
        compat = is_worker_comfyui(body)
        try:
            spec = JobSpec.parse(from_worker_comfyui(body) if compat else body)
            remote_id = await self.api.submit(await self.fetch_stored_inputs(spec))
        except RemoteExecError as exc:
            yield {"error": exc.message} if compat else ErrorChunk(exc).to_wire()
            return
        finished = False
        end: JobStatus | None = None
        images: list[OutputFile] = []
        try:
            try:
                async for chunk in self.relay(job, remote_id):
                    if isinstance(chunk, EventsChunk):
                        chunk.events = [self._timed(e) for e in chunk.events]
                    for event in chunk.events if isinstance(chunk, EventsChunk) else []:
                        if isinstance(event.payload, Executed):
                            images += [f for f in event.payload.files
                                       if f.type == "image" and f.folder == "output"]
                        elif isinstance(event.payload, JobStatus):
                            end = event.payload
                    if not compat:  # a worker-comfyui client wants only the final answer
                        yield chunk.to_wire()
            except RemoteExecError as exc:  # the worker's event stream broke off
                end = JobStatus(FAILED, exc)
            finished = end is not None and end.terminal
            if compat:
                yield compat_answer(end, await self.inline_all(images))
            elif end is None or end.status == FAILED:
                error = end.error if end is not None else None
                yield ErrorChunk(error or RemoteExecError("the job failed")).to_wire()
        finally:
            # Stopped by the SDK: a CancelledError here, or, when the stop landed while
            # the SDK itself was posting a chunk, GeneratorExit at our `yield` later.
            if not finished:
                self._spawn(self.api.cancel(remote_id))

    def _timed(self, event: Event) -> Event:
        """The first job's terminal status, with the container's cold start."""
        payload = event.payload
        if not (isinstance(payload, JobStatus) and payload.terminal
                and self.cold_start is not None):
            return event
        began, ready = self.cold_start
        self.cold_start = None
        own = payload.timing or JobTiming()
        timing = JobTiming(own.queue_wait_s, max(own.cold_start_s, ready - began),
                           own.execution_s)
        return replace(event, payload=replace(payload, timing=timing))

    async def relay(self, job: dict[str, Any], remote_id: str
                    ) -> AsyncIterator[EventsChunk | FilePart]:
        """The job's events as stream chunks (`events`, and `file_part` before the
        `executed` that needs them), up to and including its terminal status."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for event in self.api.events(remote_id):
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
                chunk: list[Event] = []
                size = 0
                for event in batch:
                    if event is None:
                        if chunk:
                            yield EventsChunk(chunk)
                        reader.result()  # re-raise a failure of the event stream
                        return
                    payload = event.payload
                    if isinstance(payload, Preview):
                        shrink_preview(payload)
                    elif isinstance(payload, Progress) and self.progress is not None:
                        now = time.monotonic()
                        if now - last_progress >= PROGRESS_INTERVAL:
                            last_progress = now
                            self.progress(job, {"node": payload.node, "value": payload.value,
                                                "max": payload.max})
                    elif isinstance(payload, Executed):
                        for file in payload.files:
                            inline_left, parts = await self.attach(file, inline_left)
                            for part in parts:
                                yield part
                    length = len(json.dumps(event.to_wire()))
                    if chunk and size + length > CHUNK_LIMIT:
                        yield EventsChunk(chunk)
                        chunk, size = [], 0
                    chunk.append(event)
                    size += length
                    if event.terminal:
                        yield EventsChunk(chunk)
                        return
                if chunk:
                    yield EventsChunk(chunk)
        finally:
            reader.cancel()

    async def attach(self, file: OutputFile, inline_left: int
                     ) -> tuple[int, list[FilePart]]:
        """Give `file` its transport (inline `data`, a `download_url`, or `parts`) in
        place of the worker's own `url`, which means nothing outside the container."""
        path = self.dirs.resolve(file.folder, file.subfolder, file.filename)
        file.url = ""
        size = file.size_bytes
        if size <= PART_BYTES and size <= inline_left:
            file.data = b64encode(await asyncio.to_thread(path.read_bytes))
            return inline_left - size, []
        if self.storage is not None:
            key = f"outputs/{file.sha256}/{file.filename}"
            file.download_url = await self.storage.put_file(key, path)
            return inline_left, []
        data = await asyncio.to_thread(path.read_bytes)
        count = max(1, math.ceil(len(data) / PART_BYTES))
        file.parts = count
        return inline_left, [FilePart(file.sha256, i, data[i * PART_BYTES:(i + 1) * PART_BYTES])
                             for i in range(count)]

    async def inline_all(self, files: list[OutputFile]) -> list[OutputFile]:
        """For worker-comfyui's answer: files that came in parts, inline after all."""
        for file in files:
            if file.data is None and not file.download_url:
                path = self.dirs.resolve(file.folder, file.subfolder, file.filename)
                file.data = b64encode(await asyncio.to_thread(path.read_bytes))
        return files

    async def fetch_stored_inputs(self, spec: JobSpec) -> JobSpec:
        """Inputs referenced by hash that the worker lacks come from the bucket."""
        missing = await self.api.missing_blobs([m.sha256 for m in spec.media if m.sha256])
        if missing and self.storage is not None:
            for item in spec.media:
                if item.sha256 in missing and await self.storage.exists(f"blobs/{item.sha256}"):
                    item.url = await self.storage.download_url(f"blobs/{item.sha256}")
                    item.sha256 = None
        return spec

    async def catalog_op(self, body: dict[str, Any]) -> list[JsonObject]:
        """What the worker offers (`describe`), or its models' hashes (`model_hashes`),
        read from the worker's catalog routes."""
        if body["action"] == MODEL_HASHES:
            names = body.get("names")
            hashes = await self.api.model_hashes(
                str(body.get("folder") or ""),
                [str(n) for n in names] if isinstance(names, list) else [])
            return [{"hashes": dict(hashes)}]
        known = body.get("known_version")
        version, info = await self.api.object_info(known if isinstance(known, str) else None)
        if info is None:
            return [{"content_version": version, "unchanged": True}]
        listing = await self.api.models()
        catalog = RemoteCatalog(str(listing.get("content_version") or version or ""), info,
                                models_from_dict(listing.get("folders") or {}))
        return list(pack_catalog(catalog, CHUNK_LIMIT - 1024))

    async def blobs_op(self, request: BlobsRequest) -> BlobsAnswer:
        """What the worker's volume and the bucket lack, with upload URLs for it."""
        missing = await self.api.missing_blobs(request.sha256)
        if self.storage is None:
            return BlobsAnswer(missing)
        answer = BlobsAnswer()
        for sha in missing:
            if not await self.storage.exists(f"blobs/{sha}"):
                answer.missing.append(sha)
                answer.uploads[sha] = await self.storage.upload_url(f"blobs/{sha}")
        return answer


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

    handler = RunpodHandler(JobApiClient(url, token), ComfyDirs(base), S3Storage.from_env(),
                            progress=runpod.serverless.progress_update,
                            cold_start=(process_started_at(), time.time()))
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
