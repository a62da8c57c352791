"""STAND-IN until the memory-snapshot hook lands (branch modal-snapshot): same interface.

The real module starts the worker's ComfyUI on the CPU without touching
CUDA before Modal's memory snapshot (`prepare_env`) and has it detect its
device again after the restore (`restore`). This stand-in does neither:
`AVAILABLE` is False, and the Modal app then starts ComfyUI after the
restore instead (no snapshot of ComfyUI), so a deployment made before the
hook lands is correct, only slower to start.
"""

from __future__ import annotations

from typing import Any

AVAILABLE = False


def prepare_env(env: dict[str, str]) -> dict[str, str]:
    """The environment for a ComfyUI started before the snapshot."""
    return dict(env)


async def restore(comfy_url: str, *, require_gpu: bool = True) -> dict[str, Any]:
    """After the restore, before the first job: ComfyUI takes the GPU."""
    return {"phase": "not_snapshotted"}
