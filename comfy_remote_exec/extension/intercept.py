"""The aiohttp middleware that takes prompts remote and keeps the queue truthful.

Added to ComfyUI's app while custom nodes load (aiohttp's own API, so it
survives ComfyUI upgrades). It looks at a handful of routes, each with and
without ComfyUI's `/api` prefix:
- `POST /prompt`: answered here when remote mode is on for the request;
- `POST /interrupt` and `POST /queue` (`delete`, `clear`): reach remote jobs,
  then go on to ComfyUI for its own queue;
- `GET /queue`: ComfyUI's answer plus the remote jobs, running and pending.
Everything else passes through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .core import RemoteExec

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
        if method == "POST" and path == "/prompt":
            answer = core.accept(await _body(request), core.host.request_user(request))
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
        elif method == "GET" and path == "/queue":
            response = await handler(request)
            return _with_remote_jobs(response, core)
        return await handler(request)

    return remote_exec_middleware


def _with_remote_jobs(response: web.StreamResponse, core: RemoteExec) -> web.StreamResponse:
    if not isinstance(response, web.Response) or response.body is None:
        return response
    running, pending = core.dispatcher.queue_items()
    if not running and not pending:
        return response
    try:
        data = json.loads(response.text or "{}")
    except ValueError:
        return response
    data["queue_running"] = [*data.get("queue_running", []), *running]
    data["queue_pending"] = [*data.get("queue_pending", []), *pending]
    return web.json_response(data, status=response.status)
