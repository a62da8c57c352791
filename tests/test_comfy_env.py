"""ComfyUI's environment: the torch device probe and the requirements install."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from comfy_remote_exec.comfy_env import (
    ComfyEnvError,
    device_args,
    ensure_requirements,
    has_requirements,
    probe_torch,
)
from comfy_remote_exec.discovery import ComfyInstall


def fake_torch(root: Path, cuda: bool) -> dict[str, str]:
    """A stand-in `torch` package for the probe: this machine has no GPU to report one."""
    pkg = root / "torch"
    (pkg / "backends").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "__version__ = '9.9.9+fake'\nfrom . import backends\n"
        f"class cuda:\n    is_available = staticmethod(lambda: {cuda})\n")
    (pkg / "backends" / "__init__.py").write_text(
        "class mps:\n    is_available = staticmethod(lambda: False)\n")
    return {"PYTHONPATH": str(root)}


def test_probe_reports_an_accelerator(tmp_path: Path) -> None:
    env = fake_torch(tmp_path, cuda=True)
    probe = probe_torch(sys.executable, env)
    assert probe.torch == "9.9.9+fake" and probe.accelerators == ["cuda"]
    assert device_args(sys.executable, [], env) == ([], None)


def test_no_accelerator_means_cpu_said_in_one_line(tmp_path: Path) -> None:
    added, note = device_args(sys.executable, ["--port", "1"], fake_torch(tmp_path, cuda=False))
    assert added == ["--cpu"]
    assert note is not None and "\n" not in note
    assert "9.9.9+fake" in note and "--cpu" in note


def test_an_explicit_device_flag_skips_the_probe() -> None:
    missing = "/nonexistent/python"  # never run: the flag decides
    for flag in ("--cpu", "--directml", "--cuda-device=1", "--default-device"):
        assert device_args(missing, ["--listen", "0.0.0.0", flag]) == ([], None)


def test_snapshot_mode_skips_the_probe_and_adds_no_cpu_flag() -> None:
    missing = "/nonexistent/python"  # never run: snapshot mode asks no torch before the restore
    added, note = device_args(missing, ["--port", "1"], {"REMOTE_EXEC_SNAPSHOT": "1"})
    assert added == [] and note is not None and "snapshot mode" in note
    assert device_args(missing, ["--cpu"], {"REMOTE_EXEC_SNAPSHOT": "1"}) == ([], None)


def test_torch_missing_is_said_clearly() -> None:
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the test environment has torch")
    assert probe_torch(sys.executable).error == "ModuleNotFoundError: No module named 'torch'"
    added, note = device_args(sys.executable, [])
    assert added == [] and note is not None
    assert "cannot import torch" in note and sys.executable in note


def test_a_broken_python_is_not_a_crash(tmp_path: Path) -> None:
    probe = probe_torch(tmp_path / "no-python")
    assert probe.torch is None and probe.error and "cannot run" in probe.error


@pytest.mark.comfyui
def test_probe_on_comfyuis_own_torch(comfy_install: ComfyInstall) -> None:
    probe = probe_torch(comfy_install.python)
    assert probe.error is None and probe.torch
    added, _ = device_args(comfy_install.python, [])
    assert added == ([] if probe.accelerators else ["--cpu"])


def test_requirements_are_installed_into_a_fresh_python(tmp_path: Path) -> None:
    """A bare venv stands for a ComfyUI Python that has only ComfyUI's own packages."""
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    with pytest.raises(ComfyEnvError, match=r"pip install -r .*requirements\.txt"):
        ensure_requirements(python, install=False)
    said: list[str] = []
    assert ensure_requirements(python, say=said.append) is True
    assert has_requirements(python) and said and str(python) in said[0]
    assert ensure_requirements(python, say=said.append) is False  # nothing left to do
    assert len(said) == 1
