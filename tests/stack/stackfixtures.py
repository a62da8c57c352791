"""A local ComfyUI's data folder to freeze: a git node, a registry node, models, workflows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ..helpers import FIXTURES, workflow, write_tiny_upscaler

GIT_NODE = "remote_exec_testnodes"
REGISTRY_NODE = "comfyui-extra-pack"
REGISTRY_ID, REGISTRY_VERSION = "comfyui-extra-pack", "1.4.2"
LORA = "styles/extra_lora.safetensors"
NODE_REPO = "https://example.invalid/remote-exec/testnodes"


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c",
                           "user.email=t@example.invalid", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def ui_workflow(lora: str) -> dict:
    """A UI-format workflow (the editor's) whose LoraLoader names `lora`."""
    return {"last_node_id": 2, "nodes": [
        {"id": 1, "type": "CheckpointLoaderSimple", "widgets_values": ["not_here.ckpt"]},
        {"id": 2, "type": "LoraLoader", "widgets_values": [lora.replace("/", "\\"), 1.0, 1.0]},
    ], "links": [], "version": 0.4}


def make_local(base: Path) -> Path:
    """`base` as a ComfyUI --base-directory; answers the commit of the git node."""
    nodes = base / "custom_nodes"
    node = nodes / GIT_NODE
    shutil.copytree(FIXTURES / "custom_nodes" / GIT_NODE, node,
                    ignore=shutil.ignore_patterns("__pycache__"))
    git(node, "init", "-q")
    git(node, "add", ".")
    git(node, "commit", "-qm", "nodes")
    git(node, "remote", "add", "origin", NODE_REPO)
    extra = nodes / REGISTRY_NODE
    extra.mkdir()
    (extra / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (extra / "pyproject.toml").write_text(
        f'[project]\nname = "{REGISTRY_ID}"\nversion = "{REGISTRY_VERSION}"\n\n'
        '[tool.comfy]\nPublisherId = "someone"\nDisplayName = "Extra pack"\n')
    (extra / ".tracking").write_text("__init__.py\npyproject.toml\n")
    (nodes / "loose_node.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    write_tiny_upscaler(base / "models" / "upscale_models" / "tiny_compact_x2.safetensors")
    lora = base / "models" / "loras" / LORA
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"lora bytes " * 100)
    flows = base / "user" / "default" / "workflows"
    flows.mkdir(parents=True)
    (flows / "upscale.json").write_text(json.dumps(workflow("upscale_tiny")))
    (flows / "lora.json").write_text(json.dumps(ui_workflow(LORA)))
    return node
