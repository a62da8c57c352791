"""The worker's REST job API (aiohttp).

`add_routes(routes, service)` registers every route on a `RouteTableDef`, so a
bare `web.Application` mounts the API in tests and `app.build_app` mounts it
in production. The answers' shapes are `views`' (those the job API's existing
clients read). Errors leave through `error_middleware` as JSON
`{"error": {code, message, ...}}` with the error's HTTP status, except on the
polling API's routes (named `polling.*`), whose clients read
`{"error": "<message>"}`; a bearer token,
when configured, is checked in constant time on everything but `GET /health`.
A client that names its protocol version (`Remote-Exec-Protocol`) and names
one this worker does not speak is refused with `protocol_mismatch`; clients
that name none (the job API's existing clients) are served as they were.
Large inputs may come in parts (`PUT /v1/blobs/{sha256}` with a
`Content-Range`), so no request outlives a platform's cut (Modal's 150 s);
outputs go down with `Range` (aiohttp's `FileResponse`).
The handlers reach the job service only; it alone talks to the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ...errors import BadRequest, NotFound, RemoteExecError, Unauthorized
from ...protocol import (
    CANCELLED,
    FAILED,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ContentRange,
    JobSpec,
    check_version,
    is_sha256,
)
from ..comfy.outputs import ComfyDirs
from ..service.jobs import Job
from ..service.service import JobService
from .catalog import catalog_hashes, catalog_models, catalog_object_info
from .views import inline_mode, job_summary, job_view, public_status, read_inline, submit_answer

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("remote_exec_service", JobService)
DIRS = web.AppKey("remote_exec_dirs", ComfyDirs)
PUBLIC_PATHS = frozenset({"/health"})
# An event stream quiet this long (a node that reports nothing, a model loading) gets
# an SSE comment, which every SSE client skips: proxies that cut idle connections
# (60 s at nginx's and most load balancers' defaults) leave it alone.
KEEPALIVE = 15.0
PLAIN_ERRORS = "polling."  # the name prefix of routes whose errors are {"error": "<message>"}


def error_response(exc: RemoteExecError, plain: bool = False) -> web.Response:
    """The error as JSON: `{"error": {code, message, ...}}` with its status; `plain`,
    `{"error": message, "error_details": {...}}` with 400 or 500 (401 stays 401),
    as the polling API's clients read errors."""
    if not plain:
        return web.json_response({"error": exc.to_dict()}, status=exc.status)
    status = exc.status if exc.status == 401 else 400 if exc.status < 500 else 500
    return web.json_response({"error": exc.message, "error_details": exc.to_dict()},
                             status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    plain = (request.match_info.route.name or "").startswith(PLAIN_ERRORS)
    try:
        return await handler(request)
    except RemoteExecError as exc:
        return error_response(exc, plain)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(RemoteExecError(exc.reason, code="http_error", status=exc.status),
                              plain)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(RemoteExecError("internal error in the worker",
                                              code="internal_error"), plain)


@web.middleware
async def protocol_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    asked = request.headers.get(PROTOCOL_HEADER)
    if asked is not None:
        check_version(int(asked) if asked.isdigit() else asked, peer="client")
    return await handler(request)


def auth_middleware(token: str | None) -> Any:
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        public = request.path in PUBLIC_PATHS and "deep" not in request.query
        if expected is not None and not public:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
                raise Unauthorized("missing or wrong bearer token" if header
                                   else "this worker requires 'Authorization: Bearer <token>'")
        return await handler(request)

    return check


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None


async def submit_from(request: web.Request) -> Job:
    """Parse a job body and submit it (shared by `/v1/jobs` and the seed API)."""
    return await request.app[SERVICE].submit(JobSpec.parse(await read_json(request)))


async def event_stream(request: web.Request, job: Job, after: int, *, status: int = 200,
                       first: dict[str, Any] | None = None) -> web.StreamResponse:
    """The job's events with `seq > after` as server-sent events, ending after its
    terminal status; `first` goes before them as a `submitted` message with no id."""
    resp = web.StreamResponse(status=status, headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", "X-Remote-Exec-Protocol": str(PROTOCOL_VERSION)})
    await resp.prepare(request)
    wrote = [time.monotonic()]  # when the stream last carried something

    async def keep_alive() -> None:
        with contextlib.suppress(ConnectionResetError, RuntimeError):  # client gone
            while True:
                quiet = time.monotonic() - wrote[0]
                if quiet < KEEPALIVE:
                    await asyncio.sleep(KEEPALIVE - quiet)
                    continue
                await resp.write(b": keep-alive\n\n")
                wrote[0] = time.monotonic()

    pulse = asyncio.create_task(keep_alive())
    try:
        if first is not None:
            data = json.dumps(first, separators=(",", ":"))
            await resp.write(f"event: submitted\ndata: {data}\n\n".encode())
        async for batch in request.app[SERVICE].stream_batches(job.id, after):
            # The events logged together go out as one write: the client wakes once.
            await resp.write("".join(f"id: {event.seq}\nevent: {event.type}\ndata: "
                                     f"{event.wire_json()}\n\n" for event in batch).encode())
            wrote[0] = time.monotonic()
        pulse.cancel()
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away; it resumes with GET .../events?after=
    finally:
        pulse.cancel()
    return resp


def job_dirs(request: web.Request, job: Job) -> ComfyDirs:
    """Where the job's output files are: a place of the storage's own (Modal: the job's
    folder on the shared Volume), else this worker's ComfyUI folders."""
    return request.app[SERVICE].storage.job_dirs(job.id) or request.app[DIRS]


def listed(service: JobService, status: str | None, limit: int) -> list[Job]:
    """`GET /v1/jobs`'s jobs, newest first. Cancelled jobs show as failed, so
    `status=failed` lists them too; `status=cancelled` lists only them."""
    if status != FAILED:
        return service.list(status, limit)
    jobs = service.list(FAILED, limit) + service.list(CANCELLED, limit)
    jobs.sort(key=lambda j: j.created_at, reverse=True)
    return jobs[: max(0, limit)]


async def blob_part(request: web.Request, sha: str) -> web.Response:
    """One part of a blob uploaded in parts (`Content-Range: bytes START-END/TOTAL`), or
    `bytes */TOTAL` with no body: where the upload stands. 201: this request completed
    the blob; 200: it was complete already; 202: not yet, `received` bytes are stored."""
    part = ContentRange.parse(request.headers["Content-Range"])
    try:
        result = await request.app[SERVICE].put_blob_part(
            request.content.iter_chunked(1024 * 1024), sha, part)
    except ConnectionResetError:  # cut off: what came is kept; the client asks and goes on
        return web.Response(status=499)  # nobody reads it (nginx's "client closed request")
    await request.release()  # a part of a blob already complete was not read
    status = 201 if result.stored else 200 if result.complete else 202
    return web.json_response({"sha256": sha, "stored": result.stored,
                              "complete": result.complete, "received": result.received,
                              "size": result.total}, status=status)


def add_routes(routes: web.RouteTableDef) -> None:
    """Register the `/v1` API and `/health`; handlers find the service on the app."""

    @routes.post("/v1/jobs")
    async def submit(request: web.Request) -> web.StreamResponse:
        """The 202 answer; or, for a client that accepts `text/event-stream`, the answer
        as a first `submitted` message and then the job's events on the same response
        (one request where a client would otherwise submit and then follow)."""
        job = await submit_from(request)
        answer = submit_answer(job, request.app[SERVICE].estimate_basis())
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await event_stream(request, job, 0, status=202, first=answer)
        return web.json_response(answer, status=202)

    @routes.get("/v1/jobs")
    async def list_jobs(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        jobs = listed(request.app[SERVICE], request.query.get("status"), limit)
        return web.json_response({"jobs": [job_summary(j) for j in jobs]})

    @routes.get("/v1/jobs/{job_id}")
    async def get_job(request: web.Request) -> web.Response:
        job = request.app[SERVICE].get(request.match_info["job_id"])
        view, pending = job_view(job, inline_mode(request.query))
        if pending:
            await request.app[SERVICE].refresh_files()
            await asyncio.to_thread(read_inline, job_dirs(request, job), pending)
        return web.json_response(view)

    @routes.delete("/v1/jobs/{job_id}")
    async def cancel_job(request: web.Request) -> web.Response:
        job = await request.app[SERVICE].cancel(request.match_info["job_id"])
        view, _ = job_view(job)
        view["message"] = ("Job cancelled" if job.status == CANCELLED
                           else f"Job already {public_status(job)}" if job.terminal
                           else "Cancel requested")
        return web.json_response(view, status=200 if job.terminal else 202)

    @routes.get("/v1/jobs/{job_id}/events")
    async def job_events(request: web.Request) -> web.StreamResponse:
        service = request.app[SERVICE]
        job = service.get(request.match_info["job_id"])
        raw_after = request.query.get("after") or request.headers.get("Last-Event-ID") or "0"
        try:
            after = int(raw_after)
        except ValueError:
            raise BadRequest("after must be an integer") from None
        return await event_stream(request, job, after)

    @routes.get("/v1/jobs/{job_id}/outputs/{type}/{path:.+}")
    async def download(request: web.Request) -> web.StreamResponse:
        job = request.app[SERVICE].get(request.match_info["job_id"])
        type_name, rel = request.match_info["type"], request.match_info["path"]
        listed = any(o.folder == type_name and o.relpath == rel for o in job.outputs)
        if not listed:
            raise NotFound(f"job {job.id} has no output {type_name}/{rel}",
                           code="output_not_found", job_id=job.id)
        path = job_dirs(request, job).resolve(type_name, "", rel)
        if not path.is_file():
            await request.app[SERVICE].refresh_files()
        if not path.is_file():
            raise NotFound(f"output {rel} is no longer on the worker",
                           code="output_gone", job_id=job.id)
        return web.FileResponse(path, chunk_size=256 * 1024)

    @routes.post("/v1/blobs/missing")
    async def blobs_missing(request: web.Request) -> web.Response:
        body = await read_json(request)
        hashes = body.get("sha256") if isinstance(body, dict) else None
        if not isinstance(hashes, list) or not all(is_sha256(h) for h in hashes):
            raise BadRequest("body must be {\"sha256\": [64-hex-digit hashes]}")
        return web.json_response({"missing": request.app[SERVICE].blobs.missing(hashes)})

    @routes.put("/v1/blobs/{sha256}")
    async def blob_put(request: web.Request) -> web.Response:
        sha = request.match_info["sha256"]
        if not is_sha256(sha):
            raise BadRequest(f"{sha!r} is not a sha256 hex digest", code="bad_hash")
        if "Content-Range" in request.headers:
            return await blob_part(request, sha)
        if not await request.app[SERVICE].put_blob(request.content.iter_chunked(1024 * 1024),
                                                   sha):
            await request.release()
            return web.json_response({"sha256": sha, "stored": False, "complete": True})
        return web.json_response({"sha256": sha, "stored": True, "complete": True}, status=201)

    @routes.get("/v1/object_info")
    async def object_info(request: web.Request) -> web.Response:
        return await catalog_object_info(request.app[SERVICE], request)

    @routes.get("/v1/models")
    async def models(request: web.Request) -> web.Response:
        return await catalog_models(request.app[SERVICE], request)

    @routes.post("/v1/models/hashes")
    async def model_hashes(request: web.Request) -> web.Response:
        return await catalog_hashes(request.app[SERVICE], await read_json(request))

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        service = request.app[SERVICE]
        healthy = service.healthy
        body: dict[str, Any] = {
            "status": "ok" if healthy else "starting", "comfyui": healthy,
            "protocol": PROTOCOL_VERSION, "protocols": sorted(SUPPORTED_VERSIONS),
            "jobs_active": service.active(),
        }
        if healthy:
            with contextlib.suppress(RemoteExecError):
                version = await service.catalog.health_version()
                if version:
                    body["content_version"] = version
        if "deep" in request.query:
            body |= await service.comfy_report()
        return web.json_response(body, status=200 if healthy else 503)
