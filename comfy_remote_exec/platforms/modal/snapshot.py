"""Modal memory snapshots of the worker: what the Modal app's two enter hooks call.

Modal runs `@modal.enter(snap=True)` on a machine without a GPU and freezes
everything it started into the snapshot; each restored container then runs
`@modal.enter(snap=False)` with the GPU attached. The worker's ComfyUI must
therefore start on the CPU without asking CUDA anything (torch keeps its first
answer to "how many GPUs?" for the life of the process), and pick its device
again after the restore.

The work happens inside ComfyUI, in the worker's ComfyUI hook
(worker/comfy/comfyui_nodes/remote_exec_worker/snapshot/): with
`REMOTE_EXEC_SNAPSHOT=1` it forces ComfyUI's `--cpu`, holds torch.cuda back,
and serves `POST /remote_exec/snapshot/restore`, which releases CUDA and
re-runs ComfyUI's device detection. This module is the Modal side of it, and
it stays thin so the snapshot logic is the same wherever a process is frozen:

- before the snapshot, start the worker with `snapshot_env()` added to its
  environment and a known `--comfy-port` (the worker then skips its torch
  probe, which would ask CUDA, and adds no `--cpu`), then `await
  check_held(comfy_url)`: it raises unless ComfyUI is held on the CPU, since
  a snapshot of any other ComfyUI would wake up without a GPU;
- after the restore, `await restore_comfyui(comfy_url)` before the first job.
  It returns ComfyUI's report (`device`, `vram_state`, `total_vram_mb`,
  `attention`, what changed) and raises `RemoteUnavailable`
  (`snapshot_restore_failed`) when the restore fails or, with `require_gpu`,
  when ComfyUI is still on the CPU (no GPU attached, or one torch cannot see).

It does not import `modal`.
"""

from __future__ import annotations

from typing import Any

import httpx

from ...comfy_env import SNAPSHOT_ENV
from ...errors import RemoteUnavailable

STATUS_PATH = "/remote_exec/snapshot"  # the hook's routes (snapshot/__init__.py)
RESTORE_PATH = "/remote_exec/snapshot/restore"
RESTORE_TIMEOUT = 300.0  # CUDA's first initialisation can take a while on a cold GPU
NO_HOOK = (f"the worker's ComfyUI hook is not loaded, or ComfyUI was not started with "
           f"{SNAPSHOT_ENV}=1")


def snapshot_env() -> dict[str, str]:
    """Environment for the worker (and so its ComfyUI) started before the snapshot."""
    return {SNAPSHOT_ENV: "1"}


async def _ask(method: str, url: str, code: str, timeout: float,
               client: httpx.AsyncClient | None) -> tuple[int, dict[str, Any]]:
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=timeout) as own:
                resp = await own.request(method, url)
        else:
            resp = await client.request(method, url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _failed(code, f"could not reach ComfyUI at {url}: {exc}", {}) from exc
    try:
        report = resp.json()
    except ValueError:
        report = {"body": resp.text[:2000]}
    return resp.status_code, report if isinstance(report, dict) else {"body": report}


def _failed(code: str, message: str, report: dict[str, Any]) -> RemoteUnavailable:
    return RemoteUnavailable(message, code=code, retryable=False, details=report)


async def check_held(comfy_url: str, *, timeout: float = 30.0,
                     client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    """Before the snapshot: ComfyUI's report, or raise unless it is held on the CPU."""
    status, report = await _ask("GET", comfy_url.rstrip("/") + STATUS_PATH,
                                "snapshot_not_held", timeout, client)
    if status == 404:
        raise _failed("snapshot_not_held", f"ComfyUI has no snapshot routes: {NO_HOOK}", report)
    if status != 200 or report.get("phase") != "held":
        raise _failed("snapshot_not_held", "ComfyUI is not held on the CPU for a snapshot "
                      f"(HTTP {status}, phase {report.get('phase')})", report)
    return report


async def restore_comfyui(comfy_url: str, *, require_gpu: bool = True,
                          timeout: float = RESTORE_TIMEOUT,
                          client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    """After the restore: have ComfyUI take the GPU now; returns its report (see above)."""
    code = "snapshot_restore_failed"
    status, report = await _ask("POST", comfy_url.rstrip("/") + RESTORE_PATH, code, timeout,
                                client)
    if status == 404:
        raise _failed(code, f"ComfyUI has no snapshot restore route: {NO_HOOK}", report)
    if status != 200 or report.get("phase") != "restored":
        reason = report.get("error") or f"HTTP {status}, phase {report.get('phase')}"
        raise _failed(code, f"ComfyUI's snapshot restore failed: {reason}", report)
    if require_gpu and report.get("device_type") in (None, "cpu"):
        raise _failed(code, "ComfyUI was restored but still runs on the CPU "
                      f"({report.get('device') or report.get('device_error')}): "
                      "no GPU is attached, or torch cannot see it", report)
    return report


# What the GPU class (`gpu.GpuWorker`) and the app file call.
AVAILABLE = True  # the hook is in the worker's ComfyUI; MEMORY_SNAPSHOT turns it on


def prepare_env(env: dict[str, str]) -> dict[str, str]:
    """The ComfyUI process's environment for a start before the snapshot."""
    return {**env, **snapshot_env()}


async def restore(comfy_url: str, *, require_gpu: bool = True) -> dict[str, Any]:
    """After the restore: ComfyUI takes the GPU (see `restore_comfyui`)."""
    return await restore_comfyui(comfy_url, require_gpu=require_gpu)
