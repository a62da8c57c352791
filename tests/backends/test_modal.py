"""The modal backend: its URL (set, or found by the launcher and cached), its token, and
the cold/warm badge read from the Modal app's `/health` (`gpu.warm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.backends import registry
from comfy_remote_exec.backends.modal import ModalBackend
from comfy_remote_exec.backends.registry import BackendContext
from comfy_remote_exec.config import resolve
from comfy_remote_exec.errors import ConfigError
from comfy_remote_exec.modal_url import remember

URL = "https://ws--comfy-remote-exec-api.modal.run"


def build(url: str | None, env: dict[str, str]) -> ModalBackend:
    spec = registry.get("modal")
    assert spec is not None
    backend = spec.factory(BackendContext(url=url, token="t", env=env,
                                          comfyui_root=Path("."), state_dir=Path(".")))
    assert isinstance(backend, ModalBackend)
    return backend


def test_url_and_token_come_as_for_http() -> None:
    secrets = {"modal": {"url": URL, "token": "from-file"}}
    cfg = resolve({"RemoteExec.Backend": "modal"}, {}, secrets)
    assert (cfg.url, cfg.token) == (URL, "from-file")
    env_first = resolve({"RemoteExec.Backend": "modal"}, {"REMOTE_EXEC_TOKEN": "env"}, secrets)
    assert env_first.token == "env"


async def test_without_a_url_it_takes_the_one_the_launcher_found(tmp_path: Path) -> None:
    env = {"REMOTE_EXEC_CACHE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as refused:
        build(None, env)
    assert refused.value.code == "no_endpoint"
    assert "modal token new" in refused.value.message and "--url" in refused.value.message
    remember("comfy-remote-exec", "API.serve", URL, env)
    backend = build(None, env)
    assert backend.url == URL and backend.name == "modal"
    await backend.close()
    given = build("https://my-label.modal.run", env)
    assert given.url == "https://my-label.modal.run", "a set URL wins over the cache"
    await given.close()
    other = {**env, "REMOTE_EXEC_MODAL_APP": "mine"}
    with pytest.raises(ConfigError):
        build(None, other)  # the cache is by app


@pytest.mark.parametrize(("gpu", "status"), [({"warm": 2, "queued": 0}, "warm"),
                                             ({"warm": 0}, "cold"), (None, "ok")])
async def test_the_badge_is_warm_or_cold_by_the_apps_gpu_containers(
        gpu: dict[str, Any] | None, status: str) -> None:
    """A stand-in for the Modal app's API `/health`: the job API's body, and `gpu` where
    the app reports its GPU containers (filled by the app, platforms/modal/)."""
    body: dict[str, Any] = {"status": "ok", "comfyui": True, "protocol": 2,
                            "protocols": [2], "jobs_active": 0}
    if gpu is not None:
        body["gpu"] = gpu

    async def health(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/health", health)
    async with TestServer(app) as server:
        backend = ModalBackend(str(server.make_url("")), "t")
        try:
            answer = await backend.health()
        finally:
            await backend.close()
    assert answer["status"] == status
    assert answer.get("gpu") == gpu, "the app's own figures pass through"
