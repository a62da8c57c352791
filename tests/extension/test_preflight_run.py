"""Preflight in `RemoteExec.accept` and shipping in the job's run, over the http
backend and a worker app on loopback (no ComfyUI: its object_info is given).

With the catalog warm, a prompt the remote cannot run is refused in ComfyUI's
400 shape without a single request to the remote; a prompt whose lora only this
machine has is accepted, and its run ships the lora (native progress on the
loader node, a `remote_exec.shipping` toast) before it submits.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from comfy_remote_exec.extension.core import RemoteExec
from tests.model_worker import TOKEN, LocalHost, model_worker

INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["base.safetensors"], {}]}}, "output_node": False},
    "LoraLoader": {"input": {"required": {"model": ["MODEL"], "lora_name": [[], {}]}},
                   "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}, "output_node": True},
}


def prompt(lora: str = "style.safetensors", save: str = "SaveImage") -> dict[str, Any]:
    return {"1": {"class_type": "CheckpointLoaderSimple",
                  "inputs": {"ckpt_name": "base.safetensors"}},
            "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "lora_name": lora}},
            "9": {"class_type": save, "inputs": {"images": ["2", 0]}}}


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    async with model_worker(tmp_path / "worker") as worker:
        worker.executor.info = INFO
        (worker.models / "checkpoints").mkdir(parents=True)
        (worker.models / "checkpoints" / "base.safetensors").write_bytes(b"b" * 100)
        (worker.models / "loras").mkdir()
        host = LocalHost(tmp_path / "local")
        env = {"REMOTE_EXEC_ENABLED": "1", "REMOTE_EXEC_BACKEND": "http",
               "REMOTE_EXEC_URL": worker.url, "REMOTE_EXEC_TOKEN": TOKEN,
               "REMOTE_EXEC_CONFIG": str(tmp_path / "none.toml")}
        core = RemoteExec(host, tmp_path / "state", env)  # type: ignore[arg-type]
        assert await core.catalog_for().refresh() is not None
        yield core, host, worker
        await core.stop()


async def test_a_prompt_the_remote_cannot_run_is_refused_without_asking_it(setup: Any) -> None:
    core, _host, worker = setup
    before = list(worker.requests)
    start = time.perf_counter()
    status, body = await core.accept({"prompt": prompt(save="FancySave")})
    assert status == 400 and body["error"]["type"] == "missing_node_type"
    status, body = await core.accept({"prompt": prompt("gone.safetensors")})
    elapsed = time.perf_counter() - start
    assert status == 400 and body["node_errors"]["2"]["errors"][0]["type"] == "value_not_in_list"
    assert "gone.safetensors" in body["error"]["details"]
    assert worker.requests[len(before):] == [], "a warm catalog: no round trip"
    assert elapsed < 2.0
    assert core.dispatcher.remaining() == 0


async def test_a_lora_only_this_machine_has_ships_with_the_run(setup: Any) -> None:
    core, host, worker = setup
    lora = host.root / "models" / "loras" / "style.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"L" * 300_000)
    before = len(worker.requests)
    status, body = await core.accept({"prompt": prompt(), "client_id": "c1"})
    assert status == 200, body
    assert worker.requests[before:] == [], "a warm accept asks the remote nothing"
    placed = worker.models / "loras" / "style.safetensors"
    await asyncio.wait_for(asyncio.gather(*core.dispatcher.tasks.values()), 30)
    assert placed.read_bytes() == lora.read_bytes()
    shipping = [d for e, d in host.sent if e == "remote_exec.shipping"]
    assert shipping[-1]["finished"] is True and shipping[-1]["name"] == "style.safetensors"
    bars = [d for e, d in host.sent if e == "progress" and d.get("node") == "2"]
    assert bars and bars[-1]["value"] == 100 and bars[-1]["max"] == 100
    # The stand-in runs no ComfyUI: the submit after the shipping is refused.
    assert any(e == "execution_error" for e, _ in host.sent)
