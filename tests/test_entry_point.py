"""The repository root loads in a real ComfyUI as a custom node."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.worker.comfy_process import ComfyProcess, ComfyProcessConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.comfyui
async def test_comfyui_loads_the_repo_as_a_custom_node(comfy_install: ComfyInstall,
                                                       tmp_path: Path) -> None:
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "comfy-remote-exec").symlink_to(REPO)
    proc = ComfyProcess(ComfyProcessConfig(install=comfy_install, base_dir=tmp_path,
                                           extra_args=["--cpu"], restart=False))
    await proc.start()
    try:
        async with httpx.AsyncClient(base_url=proc.url) as client:
            extensions = (await client.get("/extensions")).json()
    finally:
        await proc.stop()
    ours = [line for line in proc.log_tail if "comfy-remote-exec" in line]
    assert ours and not [line for line in ours if "IMPORT FAILED" in line], ours
    assert "/extensions/comfy-remote-exec/remote_exec.js" in extensions


def test_root_module_is_thin() -> None:
    namespace: dict = {"__file__": str(REPO / "__init__.py"), "__name__": "root"}
    exec(compile((REPO / "__init__.py").read_text(), "__init__.py", "exec"), namespace)
    assert namespace["NODE_CLASS_MAPPINGS"] == {}
    assert namespace["WEB_DIRECTORY"] == "./js"
