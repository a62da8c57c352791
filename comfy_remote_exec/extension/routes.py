"""The extension's own routes, under `/remote_exec/`.

Registered with `add_routes(routes, core)` on any `RouteTableDef`: ComfyUI's
in production (which also serves them under `/api`), a bare app in tests.
No route ever returns a secret: configuration leaves only as `public_view()`.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import RemoteExecError
from .core import RemoteExec


def add_routes(routes: web.RouteTableDef, core: RemoteExec) -> None:
    @routes.get("/remote_exec/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(await core.status(core.host.request_user(request)))

    @routes.get("/remote_exec/health")
    async def health(request: web.Request) -> web.Response:
        try:
            cfg = core.config(core.host.request_user(request))
            backend = core.backend(cfg.backend, cfg.url, cfg.token)
            remote = await backend.health()
            catalog = core.catalog_for(core.host.request_user(request))
            catalog.note_version(remote.get("content_version"))
            return web.json_response({"ok": True, "backend": cfg.backend, "remote": remote,
                                      "catalog": catalog.status()})
        except RemoteExecError as exc:
            return web.json_response({"ok": False, "error": {
                "code": exc.code, "message": exc.message}})

    @routes.post("/remote_exec/catalog/refresh")
    async def refresh_catalog(request: web.Request) -> web.Response:
        """Read the remote's models and nodes again now."""
        try:
            cache = core.catalog_for(core.host.request_user(request))
            await cache.refresh(force=True)
            return web.json_response({"ok": True, "catalog": cache.status()})
        except RemoteExecError as exc:
            return web.json_response({"ok": False, "error": {
                "code": exc.code, "message": exc.message}})

    @routes.get("/remote_exec/cost")
    async def cost(request: web.Request) -> web.Response:
        """This session's running total of GPU seconds and cost."""
        return web.json_response(core.costs.view())

    @routes.get("/remote_exec/jobs/{prompt_id}")
    async def job(request: web.Request) -> web.Response:
        found = core.dispatcher.find(request.match_info["prompt_id"])
        if found is None:
            return web.json_response({"error": {"code": "not_found",
                                                "message": "no such remote job"}}, status=404)
        return web.json_response(found.view())
