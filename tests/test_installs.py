"""Which ComfyUIs the integration tests run against (tests/installs.py), and that the
suite skips with the reason when there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from comfy_remote_exec.discovery import ComfyInstall

from .installs import comfy_params, comfy_version
from .test_discovery import fake_install

REPO = Path(__file__).resolve().parents[1]


def versioned(root: Path, version: str) -> Path:
    fake_install(root)
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    return root


def test_one_param_per_path_named_by_version(tmp_path: Path) -> None:
    old = versioned(tmp_path / "a", "0.3.64")
    new = versioned(tmp_path / "b", "0.26.0")
    again = versioned(tmp_path / "c", "0.26.0")
    paths = os.pathsep.join(map(str, (old, new, again, tmp_path / "missing")))
    params = comfy_params({"COMFYUI_PATHS": paths, "HOME": str(tmp_path)})
    assert [p.id for p in params] == ["comfy0.3.64", "comfy0.26.0", "comfy0.26.0-2",
                                      "no-comfyui"]
    installs = [p.values[0] for p in params]
    assert [i.root for i in installs[:3]] == [old.resolve(), new.resolve(), again.resolve()]
    assert all(isinstance(i, ComfyInstall) for i in installs[:3])
    assert "not a ComfyUI install" in installs[3]


def test_without_comfyui_paths_discovery_decides(tmp_path: Path) -> None:
    [found] = comfy_params({"COMFYUI_PATH": str(versioned(tmp_path / "x", "1.2.3"))})
    assert found.id == "comfy1.2.3"


def test_version_falls_back_to_the_folder_name(tmp_path: Path) -> None:
    assert comfy_version(fake_install(tmp_path / "ComfyUI-old")) == "ComfyUI-old"


def test_the_suite_skips_with_the_reason_when_no_comfyui_is_found(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COMFYUI_PATH", "COMFYUI_PATHS")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_entry_point.py", "tests/worker/comfy/test_comfy_start.py"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "3 skipped" in result.stdout
    assert "SKIPPED" in result.stdout and "needs a real ComfyUI" in result.stdout
    assert "comfy-cli" in result.stdout
