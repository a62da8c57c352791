"""Shipping end to end: the launcher's local ComfyUI with the extension and its worker.

A workflow names an upscaler only the local machine has: the extension's
preflight (over the remote's catalog) takes it remote, the run ships the file
into the worker's model folder (the loader node's native progress and the
`remote_exec.shipping` toast come over the WebSocket), and the job succeeds
with the shipped bytes. A model neither side has is refused with ComfyUI's
400, naming the file, before any job is created on the worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import aiohttp
import pytest

from comfy_remote_exec.discovery import ComfyInstall
from tests.helpers import workflow, write_tiny_upscaler

from .conftest import TOY_BACKEND, Launched, connected, launch, stop

pytestmark = pytest.mark.comfyui

LOCAL_ONLY = "local_only_x2.safetensors"


@pytest.fixture(scope="module")
def shipping(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Launched]:
    root = tmp_path_factory.mktemp("shipping")
    write_tiny_upscaler(root / "local" / "models" / "upscale_models" / LOCAL_ONLY, seed=7)
    handle = launch(comfy_install, root, env=TOY_BACKEND)
    yield handle
    stop(handle)


async def refresh_catalog(url: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/remote_exec/catalog/refresh") as resp:
        answer = await resp.json()
    assert answer["ok"], answer


async def test_a_local_only_model_ships_with_the_run(shipping: Launched) -> None:
    await refresh_catalog(shipping.url)
    flow = workflow("upscale_tiny")
    flow["2"]["inputs"]["model_name"] = LOCAL_ONLY
    async with connected(shipping.url) as client:
        prompt_id, messages = await client.run(flow, timeout=180)
        history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
    assert history["status"]["status_str"] == "success", history["status"]
    local = shipping.local / "models" / "upscale_models" / LOCAL_ONLY
    remote = shipping.worker / "models" / "upscale_models" / LOCAL_ONLY
    assert hashlib.sha256(remote.read_bytes()).hexdigest() == \
        hashlib.sha256(local.read_bytes()).hexdigest()
    toasts = [m.data for m in messages if m.type == "remote_exec.shipping"]
    assert toasts and toasts[-1]["finished"] and toasts[-1]["name"] == LOCAL_ONLY
    bars = [m.data for m in messages if m.type == "progress" and m.data.get("node") == "2"]
    assert bars and bars[-1]["value"] == 100


async def test_a_model_nowhere_is_refused_before_any_job(shipping: Launched) -> None:
    await refresh_catalog(shipping.url)
    flow = workflow("upscale_tiny")
    flow["2"]["inputs"]["model_name"] = "nowhere_x2.safetensors"
    async with aiohttp.ClientSession() as session, session.post(
            f"{shipping.url}/api/prompt", json={"prompt": flow}) as resp:
        status, body = resp.status, await resp.json()
    assert status == 400, body
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "value_not_in_list" and "nowhere_x2.safetensors" in error["details"]
    assert "tiny_compact_x2.safetensors" in error["details"], "lists what the remote has"
