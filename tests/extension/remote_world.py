"""A worker base with things the local install lacks: a node type
(`RemoteExecInvert`, from tests/fixtures/custom_nodes/remote_exec_invert), a
checkpoint name (not a real checkpoint: it is only offered, never loaded) and,
as every test worker has, the tiny upscaler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..helpers import FIXTURES

REMOTE_NODE = "RemoteExecInvert"
REMOTE_CHECKPOINT = "remote_only/remote_only_ckpt.safetensors"
REMOTE_UPSCALER = "tiny_compact_x2.safetensors"


def prepare_remote_world(worker_base: Path) -> None:
    nodes = worker_base / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / "remote_exec_invert"
    if not link.exists():
        link.symlink_to(FIXTURES / "custom_nodes" / "remote_exec_invert")
    ckpt = worker_base / "models" / "checkpoints" / REMOTE_CHECKPOINT
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"offered, never loaded")


def remote_graph() -> dict[str, Any]:
    """EmptyImage -> RemoteExecInvert -> the remote's upscaler -> SaveImage."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": REMOTE_NODE, "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": REMOTE_UPSCALER}},
        "4": {"class_type": "ImageUpscaleWithModel",
              "inputs": {"upscale_model": ["3", 0], "image": ["2", 0]}},
        "5": {"class_type": "SaveImage",
              "inputs": {"images": ["4", 0], "filename_prefix": "remote_world"}},
    }


def combo(info: dict[str, Any], node: str, name: str) -> list[Any]:
    spec = info[node]["input"]["required"][name]
    if isinstance(spec[0], list):
        return list(spec[0])
    return list(spec[1]["options"])
