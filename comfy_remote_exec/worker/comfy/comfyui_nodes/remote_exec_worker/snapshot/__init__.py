"""Snapshot mode: the worker's ComfyUI starts on the CPU, CUDA untouched, and takes the GPU later.

Why: a memory snapshot (Modal's `enable_memory_snapshot=True`) freezes a
process started on a machine without a GPU (`@modal.enter(snap=True)`), and
the GPU is attached only to the restored copy (`@modal.enter(snap=False)`).
ComfyUI must therefore start as a CPU ComfyUI that never asked CUDA anything
(torch keeps the first answer for good, see `cuda_guard`), and after the
restore decide its device again, as if it had started with the GPU.

With `REMOTE_EXEC_SNAPSHOT=1` in its environment, ComfyUI runs this hook's
prestartup script, which loads this package as `remote_exec_snapshot` and
calls `install()`: ComfyUI's `args.cpu` is forced on (model_management reads
it at import) and CUDA is held back (`cuda_guard`). The hook's node module
then adds two routes to ComfyUI's server:

- `POST /remote_exec/snapshot/restore`: `restore()`. Releases CUDA, puts
  `args.cpu` back to what the command line said, and re-runs ComfyUI's device
  detection (`redetect`). Answers `report()`. Idempotent; 409 when snapshot
  mode is off, 500 (with the report) when detection failed.
- `GET /remote_exec/snapshot`: `report()`: the phase (`held`, `restoring`,
  `restored`, `failed`), ComfyUI's device, vram state and total VRAM, its
  attention function, and the CUDA calls held back so far.

Restore before queueing GPU work: a prompt that runs while it restores would
see a half-detected ComfyUI. Standard library only at import.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from . import cuda_guard, redetect

ENV = "REMOTE_EXEC_SNAPSHOT"  # keep equal to comfy_env.SNAPSHOT_ENV
MODULE = "remote_exec_snapshot"  # the name this package is loaded under (prestartup_script)
RESTORE_ROUTE = "/remote_exec/snapshot/restore"
STATUS_ROUTE = "/remote_exec/snapshot"

log = logging.getLogger("remote_exec.snapshot")


@dataclass
class State:
    phase: str = "off"  # off -> held -> restoring -> restored | failed
    cpu_on_command_line: bool = False
    error: str | None = None
    restore: dict[str, Any] = field(default_factory=dict)


STATE = State()
_lock = threading.Lock()


def install() -> None:
    """Prestartup: ComfyUI starts on the CPU and CUDA stays untouched until `restore()`."""
    if STATE.phase != "off":
        return
    from comfy.cli_args import args
    STATE.cpu_on_command_line = bool(args.cpu)
    args.cpu = True
    cuda_guard.install()
    STATE.phase = "held"
    log.info("[remote-exec] snapshot mode: ComfyUI starts on the CPU; CUDA is held back "
             "until POST %s", RESTORE_ROUTE)


def restore() -> dict[str, Any]:
    """Release CUDA and re-run ComfyUI's device detection; returns `report()`."""
    with _lock:
        if STATE.phase == "restored":
            return report()
        if STATE.phase != "held":
            raise RuntimeError(f"nothing to restore: snapshot mode is {STATE.phase}")
        STATE.phase = "restoring"
        started = time.perf_counter()
        try:
            released = cuda_guard.release()
            from comfy.cli_args import args
            args.cpu = STATE.cpu_on_command_line
            STATE.restore = {"released": released, **redetect.run()}
        except BaseException as exc:
            STATE.phase = "failed"
            STATE.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.exception("[remote-exec] snapshot restore failed")
            raise
        STATE.restore["seconds"] = round(time.perf_counter() - started, 3)
        STATE.phase = "restored"
    answer = report()
    log.info("[remote-exec] snapshot restored in %.2f s: device %s, vram state %s",
             STATE.restore["seconds"], answer.get("device"), answer.get("vram_state"))
    return answer


def report() -> dict[str, Any]:
    """Where snapshot mode stands and what ComfyUI's device detection decided."""
    answer: dict[str, Any] = {"phase": STATE.phase, "held_back": dict(cuda_guard.HELD)}
    if STATE.error:
        answer["error"] = STATE.error
    if STATE.restore:
        answer["restore"] = STATE.restore
    mm = sys.modules.get("comfy.model_management")
    if mm is None:
        return answer
    try:
        device = mm.get_torch_device()
        answer.update(device=str(device), device_type=getattr(device, "type", str(device)),
                      cpu_state=mm.cpu_state.name, vram_state=mm.vram_state.name,
                      total_vram_mb=round(float(mm.total_vram)))
    except Exception as exc:  # a device that cannot be asked is itself the answer
        answer["device_error"] = f"{type(exc).__name__}: {exc}"
    attention = sys.modules.get("comfy.ldm.modules.attention")
    if attention is not None:
        answer["attention"] = getattr(getattr(attention, "optimized_attention", None),
                                      "__name__", None)
    return answer


def add_routes() -> None:
    """Add the restore and status routes to ComfyUI's server (from the hook's node module)."""
    from aiohttp import web
    from server import PromptServer

    routes = PromptServer.instance.routes

    @routes.post(RESTORE_ROUTE)
    async def restore_route(request: web.Request) -> web.Response:
        if STATE.phase == "off":
            return web.json_response(report(), status=409)
        try:
            answer = await asyncio.to_thread(restore)
        except Exception:
            return web.json_response(report(), status=500)
        return web.json_response(answer)

    @routes.get(STATUS_ROUTE)
    async def status_route(request: web.Request) -> web.Response:
        return web.json_response(report())
