"""How the worker starts its ComfyUI on a real install: --cpu when torch finds no GPU
(said once), and a ComfyUI that cannot start reported with its log tail, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from comfy_remote_exec.comfy_env import probe_torch
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.jobapi.spawn import start_worker, stop_worker, worker_command

pytestmark = pytest.mark.comfyui


def test_a_comfyui_that_fails_to_start_is_reported_with_its_log_tail(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    cmd = worker_command(python=sys.executable, comfyui=comfy_install.root,
                         comfy_python=comfy_install.python, base_dir=tmp_path,
                         comfy_args=["--cpu", "--no-such-comfyui-flag"])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    report = result.stderr[result.stderr.index("comfy-remote-exec worker: ComfyUI exited "
                                               "with code 2 before it was ready"):]
    assert "unrecognized arguments: --no-such-comfyui-flag" in report
    assert "Traceback" not in result.stdout + result.stderr


def test_without_a_gpu_comfyui_runs_with_cpu_said_once(comfy_install: ComfyInstall,
                                                       tmp_path: Path) -> None:
    if probe_torch(comfy_install.python).accelerators:
        pytest.skip("this machine has a GPU")
    lines: list[str] = []
    cmd = worker_command(python=sys.executable, comfyui=comfy_install.root,
                         comfy_python=comfy_install.python, base_dir=tmp_path)
    proc, _ = start_worker(cmd, sink=lines.append)  # ComfyUI exits at start without --cpu
    stop_worker(proc)
    said = [line for line in lines if "no GPU" in line]
    assert len(said) == 1 and "running ComfyUI with --cpu" in said[0], said
