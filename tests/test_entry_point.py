"""The repository root loads in a real ComfyUI as a custom node."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.discovery import ComfyInstall

from .extension.conftest import local_comfy

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.comfyui
async def test_comfyui_loads_the_repo_as_a_custom_node(comfy_install: ComfyInstall,
                                                       tmp_path: Path) -> None:
    proc = local_comfy(comfy_install, tmp_path, {})
    await proc.start()
    try:
        async with httpx.AsyncClient(base_url=proc.url) as client:
            extensions = (await client.get("/extensions")).json()
    finally:
        await proc.stop()
    ours = [line for line in proc.log_tail if "comfy-remote-exec" in line]
    assert ours and not [line for line in ours if "IMPORT FAILED" in line], ours
    assert "/extensions/comfy-remote-exec/remote_exec.js" in extensions
    assert any("remote execution hooks installed" in line for line in proc.log_tail)


def test_root_module_is_thin() -> None:
    tree = ast.parse((REPO / "__init__.py").read_text())
    assigned = {t.id: ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name) and t.id.isupper()}
    assert assigned["NODE_CLASS_MAPPINGS"] == {} and assigned["WEB_DIRECTORY"] == "./js"
    assert len(tree.body) < 15
