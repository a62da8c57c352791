"""The aiohttp middleware that takes prompts remote and keeps the queue truthful.

Added to ComfyUI's app while custom nodes load (aiohttp's own API, so it
survives ComfyUI upgrades). It looks at a handful of routes, each with and
without ComfyUI's `/api` prefix:
- `POST /prompt`: answered here when remote mode is on for the request;
- `POST /interrupt` and `POST /queue` (`delete`, `clear`): reach remote jobs,
  then go on to ComfyUI for its own queue;
- `POST /api/jobs/{id}/cancel` and `POST /api/jobs/cancel` (ComfyUI v0.26+):
  a remote id is cancelled here, the rest go on to ComfyUI, and the answer's
  `cancelled` says whether either side cancelled something.
Remote jobs show in `GET /queue` and `/api/jobs` through ComfyUI's own
handlers (see `adapter.install`). With remote mode on, ComfyUI's node and
model answers (`/object_info`, `/models`, `/experiment/models`...) gain the
remote's (`unionview`). Everything else passes through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .core import RemoteExec
from .unionview import union_response, wanted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        return None


def make_middleware(core: RemoteExec) -> Any:
    @web.middleware
    async def remote_exec_middleware(request: web.Request, handler: Handler
                                     ) -> web.StreamResponse:
        path = request.path[4:] if request.path.startswith("/api/") else request.path
        method = request.method
        if wanted(method, path):
            return await union_response(core, request, path, await handler(request))
        if method == "POST" and path == "/prompt":
            answer = await core.accept(await _body(request), core.host.request_user(request))
            if answer is not None:
                status, payload = answer
                return web.json_response(payload, status=status)
        elif method == "POST" and path == "/interrupt":
            body = await _body(request)
            await core.interrupt(body.get("prompt_id") if isinstance(body, dict) else None)
        elif method == "POST" and path == "/queue":
            body = await _body(request)
            if isinstance(body, dict):
                if isinstance(body.get("delete"), list):
                    await core.delete([str(x) for x in body["delete"]])
                if body.get("clear"):
                    core.dispatcher.clear_pending()
        elif method == "POST" and request.path.startswith("/api/jobs/") and \
                request.path.endswith("/cancel"):
            ids = await _cancel_ids(request, core)
            if ids:
                cancelled = [await core.dispatcher.cancel(i) for i in ids
                             if core.dispatcher.is_active(i)]
                if cancelled:
                    return _cancelled_too(await handler(request), any(cancelled))
        return await handler(request)

    return remote_exec_middleware


async def _cancel_ids(request: web.Request, core: RemoteExec) -> list[str]:
    """The ids of a jobs-API cancel request, or [] when ComfyUI must answer it alone
    (no jobs API, or ids ComfyUI refuses with a 400 before cancelling anything)."""
    if not core.host.has_jobs_api():
        return []
    if request.path == "/api/jobs/cancel":
        body = await _body(request)
        ids = body.get("job_ids") if isinstance(body, dict) else None
    else:
        ids = [request.path[len("/api/jobs/"):-len("/cancel")]]
    if not isinstance(ids, list):
        return []
    try:
        return [core.host.check_prompt_id(i) for i in ids]
    except ValueError:
        return []


def _cancelled_too(response: web.StreamResponse, cancelled: bool) -> web.StreamResponse:
    """ComfyUI's own answer, with `cancelled` true when a remote job was cancelled."""
    if not isinstance(response, web.Response) or response.status != 200:
        return response
    try:
        data = json.loads(response.text or "{}")
    except ValueError:
        return response
    if not isinstance(data, dict):
        return response
    data["cancelled"] = bool(data.get("cancelled")) or cancelled
    return web.json_response(data)
