"""Preflight with the runpod backend, through the RunPod emulator: with the remote's
catalog cached (from an earlier run, read back after a restart), a prompt the
remote cannot run is refused in ComfyUI's 400 shape and no RunPod job is
created, so no GPU time is spent on it. No worker serves the emulator here:
a job created by mistake would sit in its queue and show."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from comfy_remote_exec.extension.core import RemoteExec
from comfy_remote_exec.protocol.catalog import ModelEntry, RemoteCatalog

from ..model_worker import LocalHost
from ..runpod_emulator import RunpodEmulator

INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["base.safetensors"], {}]}}, "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}, "output_node": True},
}


def core(emulator: RunpodEmulator, root: Path) -> RemoteExec:
    env = {"REMOTE_EXEC_ENABLED": "1", "REMOTE_EXEC_BACKEND": "runpod",
           "REMOTE_EXEC_URL": emulator.endpoint, "RUNPOD_API_KEY": emulator.api_key,
           "RUNPOD_API_BASE": emulator.api_base, "REMOTE_EXEC_CONFIG": str(root / "none.toml")}
    return RemoteExec(LocalHost(root / "local"), root / "state", env)  # type: ignore[arg-type]


def prompt(ckpt: str, save: str = "SaveImage") -> dict[str, Any]:
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "9": {"class_type": save, "inputs": {"images": ["1", 0]}}}


async def test_a_refused_prompt_creates_no_runpod_job(emulator: RunpodEmulator,
                                                      tmp_path: Path) -> None:
    first = core(emulator, tmp_path)
    catalog = RemoteCatalog("0123456789abcdef", INFO,
                            {"checkpoints": [ModelEntry("base.safetensors", 100)]})
    cache = first.catalog_for()
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    cache.path.write_text(json.dumps({"fetched_at": time.time(),
                                      "catalog": catalog.to_dict()}))
    await first.stop()

    restarted = core(emulator, tmp_path)
    assert restarted.catalog_for().current() == catalog
    jobs = len(emulator.jobs)
    start = time.perf_counter()
    status, body = await restarted.accept({"prompt": prompt("base.safetensors", "Fancy")})
    assert status == 400 and body["error"]["type"] == "missing_node_type"
    assert body["node_errors"] == {}
    assert time.perf_counter() - start < 0.2
    assert len(emulator.jobs) == jobs, "no RunPod job for a prompt the remote cannot run"
    # A model both sides have (same name and size): asking its hash would start a job,
    # so preflight trusts the size, and passes.
    local = tmp_path / "local" / "models" / "checkpoints" / "base.safetensors"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"b" * 100)
    checked = await restarted.preflight(prompt("base.safetensors"))
    assert checked is not None and checked.ok and checked.compare
    assert len(emulator.jobs) == jobs
    assert restarted.dispatcher.remaining() == 0
    await restarted.stop()
