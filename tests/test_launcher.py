"""The launcher: standard library only, clear help, clear failure without ComfyUI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launcher" / "launch.py"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, no site-packages and no user paths: only the standard library.
    return subprocess.run([sys.executable, "-I", str(LAUNCHER), *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_help_documents_options_and_environment() -> None:
    out = run("--help").stdout
    for word in ("--backend", "--comfyui", "--port", "--listen", "--worker-dir",
                 "--open-results", "REMOTE_EXEC_TOKEN", "RUNPOD_API_KEY", "COMFYUI_PATH",
                 "REMOTE_EXEC_STATE_DIR"):
        assert word in out


def test_without_comfyui_it_says_how_to_get_one(tmp_path: Path) -> None:
    result = run("--backend", "local",
                 env={"HOME": str(tmp_path), "COMFYUI_PATH": str(tmp_path / "none"),
                      "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "not a ComfyUI install" in result.stderr


def test_nothing_anywhere_explains_comfy_cli(tmp_path: Path) -> None:
    result = run(env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "comfy-cli" in result.stderr and "COMFYUI_PATH" in result.stderr
