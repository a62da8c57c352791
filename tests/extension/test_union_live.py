"""The remote's nodes and models in a real local ComfyUI's answers (the launcher's
`local` worker holds a node type, a checkpoint and an upscaler the local install
lacks): the union with remote mode on, exactly local with it off, and a graph that
uses only-remote things accepted and run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from comfy_remote_exec.discovery import ComfyInstall

from .conftest import TOY_BACKEND, Launched, connected, launch, stop
from .remote_world import (
    REMOTE_CHECKPOINT,
    REMOTE_NODE,
    REMOTE_UPSCALER,
    combo,
    prepare_remote_world,
    remote_graph,
)

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def world(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Launched]:
    root = tmp_path_factory.mktemp("remote-world")
    prepare_remote_world(root / "worker")
    handle = launch(comfy_install, root, env=TOY_BACKEND)
    yield handle
    stop(handle)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, (await resp.json() if resp.status == 200 else None)


async def catalog_ready(session: aiohttp.ClientSession, url: str, timeout: float = 120.0
                        ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, status = await get(session, f"{url}/remote_exec/status")
        if (status.get("catalog") or {}).get("content_version"):
            return dict(status["catalog"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"no remote catalog: {status.get('catalog')}")
        await asyncio.sleep(0.2)


async def set_remote(session: aiohttp.ClientSession, url: str, on: bool) -> None:
    async with session.post(f"{url}/api/settings/RemoteExec.Enabled", json=on) as resp:
        assert resp.status == 200


async def test_union_on_and_exactly_local_off(world: Launched) -> None:
    async with aiohttp.ClientSession() as session:
        url = world.url
        await set_remote(session, url, True)
        catalog = await catalog_ready(session, url)
        assert catalog["fetched_at"] and catalog["age_s"] is not None
        for prefix in ("", "/api"):
            _, info = await get(session, f"{url}{prefix}/object_info")
            assert REMOTE_NODE in info
            assert REMOTE_UPSCALER in combo(info, "UpscaleModelLoader", "model_name")
            assert REMOTE_CHECKPOINT in combo(info, "CheckpointLoaderSimple", "ckpt_name")
            assert "KSampler" in info  # the local ones stay
            _, one = await get(session, f"{url}{prefix}/object_info/{REMOTE_NODE}")
            assert one[REMOTE_NODE]["display_name"] == "Invert (remote only)"
            _, files = await get(session, f"{url}{prefix}/models/checkpoints")
            assert REMOTE_CHECKPOINT in files
            _, folders = await get(session, f"{url}{prefix}/experiment/models")
            assert "upscale_models" in [f["name"] for f in folders]
            _, listed = await get(session, f"{url}{prefix}/experiment/models/upscale_models")
            entry = next(f for f in listed if f["name"] == REMOTE_UPSCALER)
            assert entry["size"] == (world.worker / "models" / "upscale_models" /
                                     REMOTE_UPSCALER).stat().st_size

        await set_remote(session, url, False)
        _, info = await get(session, f"{url}/object_info")
        assert REMOTE_NODE not in info
        assert REMOTE_UPSCALER not in combo(info, "UpscaleModelLoader", "model_name")
        assert REMOTE_CHECKPOINT not in combo(info, "CheckpointLoaderSimple", "ckpt_name")
        assert await get(session, f"{url}/object_info/{REMOTE_NODE}") == (200, {})
        _, files = await get(session, f"{url}/models/checkpoints")
        assert REMOTE_CHECKPOINT not in files
        _, listed = await get(session, f"{url}/api/experiment/models/upscale_models")
        assert REMOTE_UPSCALER not in [f["name"] for f in listed]
        await set_remote(session, url, True)


async def test_a_graph_of_remote_only_things_runs(world: Launched) -> None:
    async with aiohttp.ClientSession() as session:
        await set_remote(session, world.url, True)
        await catalog_ready(session, world.url)
    async with connected(world.url) as client:
        prompt_id, messages = await client.run(remote_graph(), timeout=120)
        errors = [m for m in messages if m.type == "execution_error"]
        assert not errors, errors[0].data
        saved = [m for m in messages if m.type == "executed" and m.data.get("node") == "5"]
        assert saved and saved[0].data["output"]["images"][0]["filename"].startswith(
            "remote_world")
        assert prompt_id
        # Only local node types, a model only the remote has: ComfyUI's own validation
        # runs here, and its missing-model error is the remote's to judge.
        graph = remote_graph()
        graph["4"]["inputs"]["image"] = ["1", 0]
        del graph["2"]
        _, messages = await client.run(graph, timeout=120)
        assert not [m for m in messages if m.type == "execution_error"]
