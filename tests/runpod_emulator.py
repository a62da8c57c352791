"""A faithful stand-in for RunPod's serverless control plane, on loopback.

Two faces, like the real thing:
- the public endpoint API (`/v2/{endpoint}/run`, `/runsync`, `/status/{id}`,
  `/stream/{id}`, `/cancel/{id}`, `/health`, `/purge-queue`), with bearer
  auth (401 for a bad key), the statuses IN_QUEUE, IN_PROGRESS, COMPLETED,
  FAILED, CANCELLED and TIMED_OUT, a stream that drains, execution timeouts,
  and 404 once a job's TTL has passed;
- the worker API the `runpod` SDK's worker loop calls (`job-take`,
  `job-take-batch`, `job-stop`, `job-done`, `job-stream`, `ping`), so
  `runpod.serverless.start` runs our handler unmodified against it.

Jobs wait in a FIFO; job-take and job-stop are long polls answered the moment
something arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
LONG_POLL = 5.0


@dataclass
class EmuJob:
    id: str
    input: dict[str, Any]
    created: float = field(default_factory=time.time)
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    progress: Any = None
    stream: deque[dict[str, Any]] = field(default_factory=deque)
    started: float | None = None
    finished: float | None = None
    ttl_ms: int = 24 * 3600 * 1000
    execution_timeout_ms: int = 600_000
    worker: str | None = None

    def expired(self, now: float) -> bool:
        return (now - self.created) * 1000 > self.ttl_ms

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started:
            out["delayTime"] = int((self.started - self.created) * 1000)
        if self.finished and self.started:
            out["executionTime"] = int((self.finished - self.started) * 1000)
        if self.output is not None and self.status in TERMINAL:
            out["output"] = self.output
        elif self.progress is not None:
            out["output"] = self.progress
        if self.error is not None:
            out["error"] = self.error
        if self.worker:
            out["workerId"] = self.worker
        return out


class RunpodEmulator:
    def __init__(self, endpoint: str = "ep-test", api_key: str = "rp-key",
                 worker_key: str = "worker-key") -> None:
        self.endpoint = endpoint
        self.api_key = api_key
        self.worker_key = worker_key
        self.jobs: dict[str, EmuJob] = {}
        self.queue: deque[str] = deque()
        self.stops: dict[str, list[str]] = {}
        self.pings: list[float] = []
        self.requests: list[tuple[str, str]] = []
        self.changed: asyncio.Condition | None = None
        self.first_take = threading.Event()
        self.clock_offset = 0.0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle (a thread of its own, so it outlives any one test's loop) ---------

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="runpod-emulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    async def _serve(self) -> None:
        self.changed = asyncio.Condition()
        app = web.Application(middlewares=[self._log])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._runner:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    @property
    def api_base(self) -> str:
        return f"{self.url}/v2"

    def worker_env(self, worker_id: str = "worker-1") -> dict[str, str]:
        """The environment RunPod gives a serverless worker, pointed at this emulator."""
        base = f"{self.url}/v2/{self.endpoint}"
        return {
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_AI_API_KEY": self.worker_key,
            "RUNPOD_ENDPOINT_ID": self.endpoint,
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=emulated",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=emulated",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=emulated",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=emulated",
            "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    # -- helpers ----------------------------------------------------------------------

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        return await handler(request)

    async def _notify(self) -> None:
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()

    def _client_auth(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        if given.removeprefix("Bearer ").strip() != self.api_key:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "Unauthorized"}),
                                       content_type="application/json")
        if request.match_info.get("endpoint") != self.endpoint:
            raise web.HTTPNotFound(text=json.dumps({"error": "endpoint not found"}),
                                   content_type="application/json")

    def _worker_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization", "") != self.worker_key:
            raise web.HTTPUnauthorized()

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward (for TTLs) without waiting."""
        self.clock_offset += seconds

    def _job(self, request: web.Request) -> EmuJob:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None or job.expired(time.time() + self.clock_offset):
            raise web.HTTPNotFound(text=json.dumps({"error": "request does not exist"}),
                                   content_type="application/json")
        self._check_timeout(job)
        return job

    def _check_timeout(self, job: EmuJob) -> None:
        if job.status == "IN_PROGRESS" and job.started and (
                (time.time() - job.started) * 1000 > job.execution_timeout_ms):
            job.status, job.finished = "TIMED_OUT", time.time()
            if job.worker:
                self.stops.setdefault(job.worker, []).append(job.id)

    async def _wait(self, predicate: Any, timeout: float) -> bool:
        assert self.changed is not None
        async with self.changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
        return bool(predicate())

    # -- routes -----------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v2/{endpoint}/run", self.run),
            web.post("/v2/{endpoint}/runsync", self.runsync),
            web.get("/v2/{endpoint}/status/{job_id}", self.status),
            web.post("/v2/{endpoint}/status/{job_id}", self.status),
            web.get("/v2/{endpoint}/stream/{job_id}", self.stream),
            web.post("/v2/{endpoint}/cancel/{job_id}", self.cancel),
            web.get("/v2/{endpoint}/health", self.health),
            web.post("/v2/{endpoint}/purge-queue", self.purge),
            web.get("/v2/{endpoint}/job-take/{worker}", self.job_take),
            web.get("/v2/{endpoint}/job-take-batch/{worker}", self.job_take_batch),
            web.get("/v2/{endpoint}/job-stop/{worker}", self.job_stop),
            web.post("/v2/{endpoint}/job-done/{worker}/{job_id}", self.job_done),
            web.post("/v2/{endpoint}/job-stream/{worker}/{job_id}", self.job_stream),
            web.get("/v2/{endpoint}/ping/{worker}", self.ping),
        ]

    async def _enqueue(self, request: web.Request) -> EmuJob:
        self._client_auth(request)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text=json.dumps({"error": "invalid JSON"}),
                                     content_type="application/json") from None
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "'input' is required"}),
                                     content_type="application/json")
        policy = body.get("policy") or {}
        job = EmuJob(id=f"{uuid.uuid4()}-e1", input=body["input"],
                     ttl_ms=int(policy.get("ttl", 24 * 3600 * 1000)),
                     execution_timeout_ms=int(policy.get("executionTimeout", 600_000)))
        self.jobs[job.id] = job
        self.queue.append(job.id)
        await self._notify()
        return job

    async def run(self, request: web.Request) -> web.Response:
        job = await self._enqueue(request)
        return web.json_response({"id": job.id, "status": job.status})

    async def runsync(self, request: web.Request) -> web.Response:
        job = await self._enqueue(request)
        await self._wait(lambda: job.status in TERMINAL, 90)
        return web.json_response(job.view())

    async def status(self, request: web.Request) -> web.Response:
        self._client_auth(request)
        return web.json_response(self._job(request).view())

    async def stream(self, request: web.Request) -> web.Response:
        self._client_auth(request)
        job = self._job(request)
        items = list(job.stream)
        job.stream.clear()
        # As RunPod's /stream: the job's delayTime and executionTime (ms) once known.
        times = {k: v for k, v in job.view().items() if k in ("delayTime", "executionTime")}
        return web.json_response({"status": job.status, "stream": items, **times})

    async def cancel(self, request: web.Request) -> web.Response:
        self._client_auth(request)
        job = self._job(request)
        if job.status == "IN_QUEUE":
            with contextlib.suppress(ValueError):
                self.queue.remove(job.id)
        if job.status not in TERMINAL:
            if job.status == "IN_PROGRESS" and job.worker:
                self.stops.setdefault(job.worker, []).append(job.id)
            job.status, job.finished = "CANCELLED", time.time()
            await self._notify()
        return web.json_response({"id": job.id, "status": job.status})

    async def health(self, request: web.Request) -> web.Response:
        self._client_auth(request)
        states = [j.status for j in self.jobs.values()]
        recent_ping = bool(self.pings) and time.time() - self.pings[-1] < 30
        running = sum(s == "IN_PROGRESS" for s in states)
        return web.json_response({
            "jobs": {"completed": states.count("COMPLETED"), "failed": states.count("FAILED"),
                     "inProgress": running, "inQueue": len(self.queue), "retried": 0},
            "workers": {"idle": int(recent_ping and not running), "running": running,
                        "initializing": 0, "ready": int(recent_ping), "throttled": 0,
                        "unhealthy": 0}})

    async def purge(self, request: web.Request) -> web.Response:
        self._client_auth(request)
        removed = len(self.queue)
        for job_id in self.queue:
            self.jobs[job_id].status = "CANCELLED"
        self.queue.clear()
        return web.json_response({"removed": removed, "status": "completed"})

    # -- the worker side ----------------------------------------------------------------

    async def _take(self, request: web.Request, count: int) -> list[dict[str, Any]]:
        self._worker_auth(request)
        worker = request.match_info["worker"]
        self.pings.append(time.time())
        self.first_take.set()
        if not await self._wait(lambda: bool(self.queue), LONG_POLL):
            return []
        taken: list[dict[str, Any]] = []
        while self.queue and len(taken) < count:
            job = self.jobs[self.queue.popleft()]
            job.status, job.started, job.worker = "IN_PROGRESS", time.time(), worker
            taken.append({"id": job.id, "input": job.input})
        await self._notify()
        return taken

    async def job_take(self, request: web.Request) -> web.Response:
        taken = await self._take(request, 1)
        return web.json_response(taken[0]) if taken else web.Response(status=204)

    async def job_take_batch(self, request: web.Request) -> web.Response:
        """The SDK's batch take, used when a worker runs more than one job at once."""
        taken = await self._take(request, max(1, int(request.query.get("batch_size", "1"))))
        return web.json_response(taken) if taken else web.Response(status=204)

    async def job_stop(self, request: web.Request) -> web.Response:
        self._worker_auth(request)
        worker = request.match_info["worker"]
        if not await self._wait(lambda: bool(self.stops.get(worker)), LONG_POLL):
            return web.Response(status=204)
        ids, self.stops[worker] = self.stops[worker], []
        return web.json_response({"jobsToStop": ids})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        self._worker_auth(request)
        data = json.loads(await request.text())
        return data if isinstance(data, dict) else {}

    async def job_stream(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        job = self.jobs.get(request.match_info["job_id"])
        if job is not None and job.status == "IN_PROGRESS":
            job.stream.append({"output": data.get("output")})
            await self._notify()
        return web.json_response({})

    async def job_done(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        job = self.jobs.get(request.match_info["job_id"])
        if job is None or job.status in TERMINAL:
            return web.json_response({})
        if data.get("status") == "IN_PROGRESS":  # progress_update
            job.progress = data.get("output")
        elif data.get("error"):
            job.status, job.error, job.finished = "FAILED", str(data["error"]), time.time()
        else:
            job.status, job.output, job.finished = "COMPLETED", data.get("output"), time.time()
        await self._notify()
        return web.json_response({})

    async def ping(self, request: web.Request) -> web.Response:
        self._worker_auth(request)
        self.pings.append(time.time())
        return web.json_response({})
