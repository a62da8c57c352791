"""Acceptance (issue 10, memory snapshots): the worker's ComfyUI under the snapshot hook,
on this CPU machine, for each ComfyUI under test.

The worker starts as the Modal app's `@modal.enter(snap=True)` would start it
(`snapshot_env()`, a known ComfyUI port), with tests/fixtures/cuda_recorder on
PYTHONPATH: every CUDA call that reaches torch in ComfyUI's process is logged.
Before the restore, ComfyUI starts and runs CPU workflows (one loads a model)
and the log stays empty. Then `restore_comfyui`, as `@modal.enter(snap=False)`
would call it, with the recorder now faking one CUDA device: ComfyUI's device
is cuda, as `/system_stats` reports it too. No workflow runs on the fake GPU.
Below Python, LD_DEBUG shows that the CUDA runtime never loaded the driver.
A control run without the hook shows that the recorder does see ComfyUI's
calls. Plus the client's answers to a failed or CPU-only restore.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_remote_exec.comfy_env import custom_nodes_config
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.errors import RemoteUnavailable
from comfy_remote_exec.jobapi.spawn import start_worker, stop_worker, worker_command
from comfy_remote_exec.platforms.modal.snapshot import (
    RESTORE_PATH,
    STATUS_PATH,
    check_held,
    restore_comfyui,
    snapshot_env,
)
from comfy_remote_exec.worker.app import HOOK_NODES
from comfy_remote_exec.worker.comfy.comfy_process import free_port

from ...conftest import TOKEN, WorkerHandle, prepare_worker_base
from ...helpers import FIXTURES, workflow

RECORDER = FIXTURES / "cuda_recorder"
GIB = 1024 ** 3
# Libraries that dlopen libcuda.so.1 in their constructors while torch is imported
# (CUDA 13 wheels); they call no cuInit. Any other library asking means CUDA was used.
IMPORT_TIME_DRIVER_LOOKUPS = ("libcublasLt", "libcusparseLt")


def recorded(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def driver_loaders(folder: Path) -> set[str]:
    """The libraries that asked the dynamic loader for the CUDA driver (LD_DEBUG=files)."""
    found = set()
    for trace in folder.glob("ld.*"):
        for line in trace.read_text(encoding="utf-8", errors="replace").splitlines():
            if "file=libcuda.so" in line and "dynamically loaded by " in line:
                found.add(Path(line.split("dynamically loaded by ", 1)[1].split()[0]).name)
    return found


def recorder_env(log: Path, **more: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(RECORDER), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "REMOTE_EXEC_CUDA_LOG": str(log), **more}


@dataclass
class SnapshotRun:
    worker: WorkerHandle
    comfy_url: str
    cuda_log: Path  # the recorder's log
    ld_traces: Path  # LD_DEBUG=files output of the worker and its ComfyUI


@pytest.fixture
def snapshot_run(comfy_install: ComfyInstall, tmp_path: Path) -> Iterator[SnapshotRun]:
    """A worker started as for a snapshot, with the recorder in its ComfyUI."""
    base, log, traces = tmp_path / "worker", tmp_path / "cuda-calls.jsonl", tmp_path / "ld"
    prepare_worker_base(base)
    traces.mkdir()
    comfy_port = free_port()
    cmd = worker_command(python=sys.executable, comfyui=comfy_install.root,
                         comfy_python=comfy_install.python, base_dir=base,
                         token_env="REMOTE_EXEC_TEST_TOKEN",
                         extra=["--comfy-port", str(comfy_port)])  # no --cpu: the hook's job
    env = recorder_env(log, REMOTE_EXEC_TEST_TOKEN=TOKEN, LD_DEBUG="files",
                       LD_DEBUG_OUTPUT=str(traces / "ld"), **snapshot_env())
    proc, url = start_worker(cmd, env=env)
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30.0)
    try:
        yield SnapshotRun(WorkerHandle(url=url, base=base, proc=proc, client=client),
                          f"http://127.0.0.1:{comfy_port}", log, traces)
    finally:
        client.close()
        stop_worker(proc)


@pytest.mark.comfyui
def test_comfyui_starts_without_touching_cuda_and_takes_the_gpu_on_restore(
        snapshot_run: SnapshotRun) -> None:
    worker, comfy_url, log = snapshot_run.worker, snapshot_run.comfy_url, snapshot_run.cuda_log
    for name in ("invert", "upscale_tiny"):  # the second loads a model, on the CPU
        job, _ = worker.run({"workflow": workflow(name)}, timeout=120)
        assert job["status"] == "completed", job
        assert job["outputs"], job

    assert recorded(log) == [], "CUDA was asked before the restore"
    held = asyncio.run(check_held(comfy_url))
    assert (held["device"], held["cpu_state"], held["vram_state"]) == ("cpu", "CPU", "DISABLED")
    assert held["held_back"].get("is_available", 0) >= 1, held  # ComfyUI asked; the guard said no
    assert held["attention"] == "attention_sub_quad"
    # Below Python too: the CUDA runtime never went for the driver. Only the two libraries
    # whose constructors look for it when torch is imported did (no cuInit; torch's own).
    early = driver_loaders(snapshot_run.ld_traces)
    assert any(name.startswith("libcublasLt") for name in early), "no loader trace"
    assert {name for name in early if not name.startswith(IMPORT_TIME_DRIVER_LOOKUPS)} == set()

    report = asyncio.run(restore_comfyui(comfy_url))
    assert report["phase"] == "restored", report
    assert (report["device"], report["device_type"]) == ("cuda:0", "cuda")
    assert (report["cpu_state"], report["vram_state"]) == ("GPU", "NORMAL_VRAM")
    assert report["total_vram_mb"] == 24 * 1024  # the recorder's fake device
    assert report["attention"] == "attention_pytorch"
    changed = report["restore"]["changed"]
    assert {"cpu_state", "vram_state", "total_vram"} <= set(changed["comfy.model_management"])
    assert report["restore"]["rebound"].get("optimized_attention", 0) > 0  # importers by value

    stats = httpx.get(f"{comfy_url}/system_stats", timeout=30).json()
    device = stats["devices"][0]
    assert (device["type"], device["index"], device["vram_total"]) == ("cuda", 0, 24 * GIB)

    assert any("cache cleared" in note for note in report["restore"]["notes"])
    # ComfyUI's prompt worker then frees them, ending in soft_empty_cache() on the fake GPU.
    deadline = time.monotonic() + 60
    while not any(call["call"] == "torch.cuda.ipc_collect" for call in recorded(log)):
        assert time.monotonic() < deadline, "the prompt worker never freed the CPU run's models"
        time.sleep(0.2)

    after = recorded(log)
    assert after and {call["phase"] for call in after} <= {"restoring", "restored"}
    unfaked = [call for call in after if not call["faked"]]
    assert unfaked == [], "the restore reached real CUDA; give the recorder a fake for it"

    with pytest.raises(RemoteUnavailable, match="not held"):
        asyncio.run(check_held(comfy_url))  # a restored ComfyUI is no longer fit to freeze
    again = asyncio.run(restore_comfyui(comfy_url))
    assert (again["phase"], again["device"]) == ("restored", "cuda:0")
    assert again["restore"]["seconds"] == report["restore"]["seconds"]  # not run twice
    assert worker.client.get("/health").status_code == 200
    # After it, only comfy-aimdo (0.26's DynamicVRAM, replayed) looked for the driver.
    assert not any(name.startswith("libcudart") for name in driver_loaders(snapshot_run.ld_traces))


@pytest.mark.comfyui
def test_the_recorder_sees_comfyuis_cuda_calls_without_the_hook(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    """The control: without the hook, the same log and traces fill as ComfyUI --cpu imports."""
    log, base, traces = tmp_path / "cuda-calls.jsonl", tmp_path / "base", tmp_path / "ld"
    (base / "custom_nodes").mkdir(parents=True)
    traces.mkdir()
    hooks = custom_nodes_config(tmp_path / "hooks.yaml", "comfy_remote_exec_worker", HOOK_NODES)
    env = recorder_env(log, LD_DEBUG="files", LD_DEBUG_OUTPUT=str(traces / "ld"))
    env.pop("REMOTE_EXEC_SNAPSHOT", None)
    done = subprocess.run(
        [str(comfy_install.python), "main.py", "--cpu", "--quick-test-for-ci",
         "--base-directory", str(base), "--extra-model-paths-config", str(hooks),
         "--port", str(free_port())],
        cwd=comfy_install.root, env=env, capture_output=True, text=True, timeout=240,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = recorded(log)
    assert {call["phase"] for call in calls} == {"no-hook"}
    assert any(call["call"] == "torch.cuda.is_available"
               and "/comfy/ops.py:" in call["caller"] for call in calls), calls
    assert any(name.startswith("libcudart") for name in driver_loaders(traces))


def answering(status: int, body: dict[str, Any]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        expected = ("POST", RESTORE_PATH) if request.method == "POST" else ("GET", STATUS_PATH)
        assert (request.method, request.url.path) == expected
        return httpx.Response(status, json=body)
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_restore_comfyui_returns_the_report_of_a_gpu_comfyui() -> None:
    body = {"phase": "restored", "device": "cuda:0", "device_type": "cuda"}
    async with answering(200, body) as client:
        assert await restore_comfyui("http://comfy:1/", client=client) == body


@pytest.mark.parametrize(("status", "body", "said"), [
    (200, {"phase": "restored", "device": "cpu", "device_type": "cpu"}, "still runs on the CPU"),
    (500, {"phase": "failed", "error": "RuntimeError: no driver"}, "RuntimeError: no driver"),
    (409, {"phase": "off"}, "HTTP 409, phase off"),
    (404, {}, "hook is not loaded"),
])
async def test_restore_comfyui_fails_clearly(status: int, body: dict[str, Any], said: str) -> None:
    async with answering(status, body) as client:
        with pytest.raises(RemoteUnavailable) as caught:
            await restore_comfyui("http://comfy:1", client=client)
    assert said in caught.value.message
    assert caught.value.code == "snapshot_restore_failed" and not caught.value.retryable
    assert caught.value.details == body


async def test_a_cpu_comfyui_is_fine_when_no_gpu_is_required() -> None:
    body = {"phase": "restored", "device": "cpu", "device_type": "cpu"}
    async with answering(200, body) as client:
        assert await restore_comfyui("http://comfy:1", client=client,
                                     require_gpu=False) == body


@pytest.mark.parametrize(("status", "body", "said"), [
    (404, {}, "hook is not loaded"),
    (200, {"phase": "restored"}, "phase restored"),
])
async def test_check_held_refuses_a_comfyui_unfit_for_a_snapshot(
        status: int, body: dict[str, Any], said: str) -> None:
    async with answering(status, body) as client:
        with pytest.raises(RemoteUnavailable) as caught:
            await check_held("http://comfy:1", client=client)
    assert said in caught.value.message and caught.value.code == "snapshot_not_held"
