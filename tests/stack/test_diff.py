"""Acceptance: `stack diff` against a worker with one custom node and one model fewer
than the frozen stack names exactly those.

The worker's `/v1/object_info` is the real worker's. `/v1/models` is the
worker's own where it serves one; otherwise a loopback aiohttp app serves the
documented shape (`{"content_version", "folders": {folder: [{name, size}]}}`)
for the worker's model files, beside the real object_info.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.stack.cli import main as stack_main
from comfy_remote_exec.stack.diff import compare, report
from comfy_remote_exec.stack.freeze import freeze, render
from comfy_remote_exec.stack.spec import CustomNode, Model, Stack, load_stack, parse_stack

from ..conftest import TOKEN, WorkerHandle
from .stackfixtures import GIT_NODE, LORA, REGISTRY_NODE, make_local

pytestmark = pytest.mark.comfyui


def model_listing(base: Path) -> dict[str, Any]:
    """`/v1/models` in its documented shape, for a base directory's model files."""
    folders: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(p for p in (base / "models").iterdir() if p.is_dir()):
        folders[folder.name] = [
            {"name": f.relative_to(folder).as_posix(), "size": f.stat().st_size}
            for f in sorted(folder.rglob("*")) if f.is_file()]
    return {"content_version": "0" * 12, "folders": folders}


@pytest_asyncio.fixture
async def remote(worker: WorkerHandle) -> AsyncIterator[str]:
    """The worker's URL where it serves /v1/models, else a loopback app that does."""
    if worker.client.get("/v1/models").status_code == 200:
        yield worker.url
        return
    object_info = worker.client.get("/v1/object_info").json()

    def authorized(request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized()

    async def info(request: web.Request) -> web.Response:
        authorized(request)
        return web.json_response(object_info)

    async def models(request: web.Request) -> web.Response:
        authorized(request)
        return web.json_response(model_listing(worker.base))

    app = web.Application()
    app.add_routes([web.get("/v1/object_info", info), web.get("/v1/models", models)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_diff_names_the_node_and_model_the_worker_lacks(
        worker: WorkerHandle, remote: str, comfy_install: ComfyInstall, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "local"
    make_local(base)
    # The local ComfyUI's node types: what the worker shows for the node it has.
    object_info = worker.client.get("/v1/object_info").json()
    frozen = freeze(comfy_install.root, base_dir=base, object_info=object_info)
    stack_file = tmp_path / "frozen.yaml"
    stack_file.write_text(render(frozen), encoding="utf-8")
    nodes = {n.name: n for n in load_stack(stack_file).custom_nodes}
    assert nodes[GIT_NODE].node_types, "node types recorded for the package the worker has"

    monkeypatch.setenv("DIFF_TOKEN", TOKEN)
    argv = ["diff", "--stack", str(stack_file), "--url", remote, "--token-env", "DIFF_TOKEN"]
    code = await asyncio.to_thread(stack_main, [*argv, "--json"])
    found = json.loads(capsys.readouterr().out)
    assert code == 3, "differences exit 3"
    assert found["missing_nodes"] == {REGISTRY_NODE: []}
    assert found["missing_types"] == {}
    assert found["missing_models"] == [f"loras/{LORA}"]
    assert found["wrong_size"] == []
    assert "upscale_models/tiny_compact_x2.safetensors" not in found["extra_models"]
    await asyncio.to_thread(stack_main, argv)
    text = capsys.readouterr().out
    assert f"missing custom node {REGISTRY_NODE}" in text
    assert f"missing model loras/{LORA}" in text
    # A wrong token is said plainly.
    monkeypatch.setenv("DIFF_TOKEN", "wrong")
    assert await asyncio.to_thread(stack_main, argv) == 1
    assert "refused the token" in capsys.readouterr().err


def test_compare_types_sizes_and_extras() -> None:
    stack = Stack(parse_stack({"comfyui": {"repo": "https://x.invalid/c", "ref": "v1"}})
                  .comfyui,
                  custom_nodes=(CustomNode("pack", "https://x.invalid/p", "a" * 40,
                                           node_types=("A", "B")),),
                  models=(Model("m.safetensors", "https://x.invalid/m", "loras", size=10),))
    info = {"A": {"python_module": "custom_nodes.pack"},
            "Z": {"python_module": "custom_nodes.other"},
            "H": {"python_module": "custom_nodes.remote_exec_worker"}}
    models = {"folders": {"loras": [{"name": "m.safetensors", "size": 11},
                                    {"name": "x.safetensors", "size": 1}]}}
    diff = compare(stack, info, models)
    assert diff.missing_types == {"pack": ["B"]} and not diff.missing_nodes
    assert diff.extra_nodes == {"other": ["Z"]}, "the worker's own hooks are not extra"
    assert diff.wrong_size == [("loras/m.safetensors", 11, 10)]
    assert diff.extra_models == ["loras/x.safetensors"] and not diff.same
    assert "custom node pack lacks node types: B" in report(diff)
    same = compare(stack, {"A": {"python_module": "custom_nodes.pack"},
                           "B": {"python_module": "custom_nodes.pack"}},
                   {"folders": {"loras": [{"name": "m.safetensors", "size": 10}]}})
    assert same.same and report(same).startswith("the remote has everything")
