"""The comfy-cli command line the launcher runs (the install itself, from a local git
clone, is tested end to end in tests/test_launcher.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfy_remote_exec.comfy_install import (
    ComfyInstallError,
    comfy_cli_env,
    device_flag,
    install_comfyui,
    install_command,
)


def test_command_names_workspace_url_and_a_device() -> None:
    cmd = install_command("comfy", Path("/w/ComfyUI"), "/src/ComfyUI@v1", ["--skip-manager"])
    assert cmd[:5] == ["comfy", "--workspace", "/w/ComfyUI", "--skip-prompt", "install"]
    assert cmd[5:7] == ["--url", "/src/ComfyUI@v1"]
    assert cmd[7] == device_flag() and cmd[-1] == "--skip-manager"


def test_a_device_in_the_extra_arguments_wins() -> None:
    cmd = install_command("comfy", Path("/w"), None, ["--amd", "--skip-manager"])
    assert "--url" not in cmd and cmd.count("--amd") == 1
    assert not {"--nvidia", "--cpu", "--m-series"} & set(cmd)


def test_comfy_cli_runs_outside_any_active_environment() -> None:
    env = comfy_cli_env({"VIRTUAL_ENV": "/v", "CONDA_PREFIX": "/c", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "DO_NOT_TRACK": "1"}
    assert comfy_cli_env({"DO_NOT_TRACK": "0"})["DO_NOT_TRACK"] == "0"


def test_an_existing_folder_is_never_installed_over(tmp_path: Path) -> None:
    (tmp_path / "ComfyUI").mkdir()
    with pytest.raises(ComfyInstallError, match="already exists"):
        install_comfyui(tmp_path / "ComfyUI")
