"""The seed API, kept for existing clients: `POST /submit_workflow`, `GET /status/{id}`.

A thin shape adapter over the job service: a call id is a job id. RUNNING
(queued or running) answers 202; COMPLETED answers 200 with every image
inline as base64 under `output.images`; FAILED and CANCELLED carry `error`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ...errors import NotFound
from ...protocol import CANCELLED, COMPLETED, FAILED
from ..comfy.outputs import ComfyDirs
from ..service.jobs import Job
from .api import DIRS, SERVICE, output_base64, submit_from


def _images(job: Job, dirs: ComfyDirs) -> list[dict[str, Any]]:
    images = []
    for out in job.outputs:
        if out.type != "image" or out.folder != "output":
            continue
        images.append({"filename": out.filename, "subfolder": out.subfolder,
                       "node_id": out.node_id, "data": output_base64(dirs, out)})
    return images


def add_compat_routes(routes: web.RouteTableDef) -> None:
    @routes.post("/submit_workflow")
    async def submit_workflow(request: web.Request) -> web.Response:
        job = await submit_from(request)
        return web.json_response({"call_id": job.id}, status=202)

    @routes.get("/status/{call_id}")
    async def status(request: web.Request) -> web.Response:
        try:
            job = request.app[SERVICE].get(request.match_info["call_id"])
        except NotFound:
            return web.json_response({"error": "Call ID not found or invalid."}, status=404)
        if job.status == COMPLETED:
            images = await asyncio.to_thread(_images, job, request.app[DIRS])
            return web.json_response({"status": "COMPLETED", "call_id": job.id,
                                      "output": {"images": images}})
        if job.status in (FAILED, CANCELLED):
            error = job.life.error.message if job.life.error else job.status
            return web.json_response({"status": job.status.upper(), "call_id": job.id,
                                      "error": error}, status=200)
        return web.json_response({"status": "RUNNING", "call_id": job.id,
                                  "progress": job.progress}, status=202)
