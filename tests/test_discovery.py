"""ComfyUI discovery order and messages, on fake installs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyUINotFound, default_workspace, find_comfyui, main


def fake_install(root: Path, venv: str | None = ".venv") -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    if venv:
        py = root / venv / "bin" / "python"
        py.parent.mkdir(parents=True)
        py.write_text("#!/bin/sh\n")
        py.chmod(0o755)
    return root


def test_order_explicit_env_cli_default_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = fake_install(home / "comfy" / "ComfyUI")
    plain = fake_install(home / "ComfyUI", venv="venv")
    env_dir = fake_install(tmp_path / "env")
    explicit = fake_install(tmp_path / "explicit")
    env = {"COMFYUI_PATH": str(env_dir)}
    assert find_comfyui(explicit, env=env, home=home).root == explicit.resolve()
    assert find_comfyui(None, env=env, home=home).root == env_dir.resolve()
    assert find_comfyui(None, env={}, home=home).root == cli.resolve()
    assert cli == default_workspace(home)  # where the launcher has comfy-cli install it
    shutil.rmtree(cli)
    found = find_comfyui(None, env={}, home=home)
    assert found.root == plain.resolve() and found.python.parent.parent.name == "venv"


def test_explicit_python_wins(tmp_path: Path) -> None:
    root = fake_install(tmp_path / "c", venv=None)
    py = tmp_path / "py"
    py.write_text("")
    assert find_comfyui(root, python=py, env={}, home=tmp_path).python == py


def test_missing_venv_says_so(tmp_path: Path) -> None:
    root = fake_install(tmp_path / "c", venv=None)
    with pytest.raises(ComfyUINotFound, match="--python"):
        find_comfyui(root, env={}, home=tmp_path)


def test_wrong_explicit_path_is_an_error_not_a_fallthrough(tmp_path: Path) -> None:
    fake_install(tmp_path / "comfy" / "ComfyUI")
    with pytest.raises(ComfyUINotFound, match="not a ComfyUI install"):
        find_comfyui(tmp_path / "nothing", env={}, home=tmp_path)
    with pytest.raises(ComfyUINotFound, match="COMFYUI_PATH"):
        find_comfyui(None, env={"COMFYUI_PATH": str(tmp_path / "nope")}, home=tmp_path)


def test_nothing_found_explains_how_to_get_comfyui(tmp_path: Path) -> None:
    with pytest.raises(ComfyUINotFound) as info:
        find_comfyui(None, env={}, home=tmp_path)
    assert "comfy-cli" in info.value.message and "COMFYUI_PATH" in info.value.message
    assert str(tmp_path / "comfy" / "ComfyUI") in info.value.message


def test_cli_prints_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_install(tmp_path / "c")
    assert main([str(root)]) == 0
    assert str(root.resolve()) in capsys.readouterr().out
    assert main([str(tmp_path / "none")]) == 1
