"""The polling API, kept for its existing clients: `POST /submit_workflow`,
`GET /status/{id}` (`shared/specs/job-apis.md`).

A thin shape adapter over the job service: a call id is a job id. The submit
answers 202 `{"id", "status": "RUNNING"}`; a status is RUNNING (queued or
running, 202), COMPLETED (200, every output image inline as base64 under
`output.images`) or FAILED (200, with the message in `error`; a cancelled job
is FAILED with `"Cancelled by user"` and `cancelled: true`, since these
clients poll until COMPLETED or FAILED). An unknown id answers 404
`{"error": "Call ID not found or invalid."}`. Errors are `{"error": "<message>"}`
(the routes are named `polling.*` for `error_middleware`). Our fields beside
theirs: `call_id` (the same id, as this worker first named it), `progress`,
`error_details`, and each image's `subfolder` and `node_id`.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp import web

from ...errors import NotFound, RemoteExecError
from ...protocol import CANCELLED, COMPLETED, FAILED
from ..comfy.outputs import ComfyDirs
from ..service.jobs import Job
from .api import SERVICE, job_dirs, submit_from
from .views import error_details, error_message, progress

UNKNOWN_CALL = "Call ID not found or invalid."


def _images(job: Job, dirs: ComfyDirs) -> list[dict[str, Any]]:
    images = []
    for out in job.outputs:
        if out.type != "image" or out.folder != "output":
            continue
        try:
            data = dirs.resolve(out.folder, out.subfolder, out.filename).read_bytes()
        except OSError:
            raise RemoteExecError(f"output {out.relpath} is no longer on the worker",
                                  code="output_gone", status=410, job_id=job.id) from None
        images.append({"filename": out.filename, "type": "base64",
                       "data": base64.b64encode(data).decode("ascii"),
                       "subfolder": out.subfolder, "node_id": out.node_id})
    return images


def add_compat_routes(routes: web.RouteTableDef) -> None:
    @routes.post("/submit_workflow", name="polling.submit_workflow")
    async def submit_workflow(request: web.Request) -> web.Response:
        job = await submit_from(request)
        return web.json_response({"id": job.id, "status": "RUNNING", "call_id": job.id},
                                 status=202)

    @routes.get("/status/{call_id}", name="polling.status")
    async def status(request: web.Request) -> web.Response:
        try:
            job = request.app[SERVICE].get(request.match_info["call_id"])
        except NotFound:
            return web.json_response({"error": UNKNOWN_CALL}, status=404)
        ids = {"id": job.id, "call_id": job.id}
        if job.status == COMPLETED:
            await request.app[SERVICE].refresh_files()
            images = await asyncio.to_thread(_images, job, job_dirs(request, job))
            return web.json_response({**ids, "status": "COMPLETED",
                                      "output": {"images": images}})
        if job.status in (FAILED, CANCELLED):
            return web.json_response({**ids, "status": "FAILED", "error": error_message(job),
                                      "cancelled": job.status == CANCELLED,
                                      "error_details": error_details(job)})
        return web.json_response({**ids, "status": "RUNNING", "progress": progress(job)},
                                 status=202)
