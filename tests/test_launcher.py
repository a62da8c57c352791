"""The launcher: standard library only, clear help, clear failure without ComfyUI, the
offer to install ComfyUI with comfy-cli, --cpu without a GPU, and start failures reported
with ComfyUI's own log lines."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.comfy_env import probe_torch
from comfy_remote_exec.discovery import ComfyInstall, find_comfyui
from comfy_remote_exec.worker.comfy.comfy_process import free_port

from .extension.conftest import launch, stop

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launcher" / "launch.py"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, no site-packages and no user paths: only the standard library.
    return subprocess.run([sys.executable, "-I", str(LAUNCHER), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


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


def read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    """Read a pty until `marker` shows, or EOF, within `timeout` seconds."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout} s; got {seen!r}"
        if not select.select([fd], [], [], left)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_on_a_terminal_it_asks_before_installing(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-I", str(LAUNCHER)], stdin=slave, stdout=slave,
                            stderr=slave, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    os.close(slave)
    try:
        asked = read_until(master, b"[y/N]")
        assert f"into {tmp_path / 'comfy' / 'ComfyUI'}".encode() in asked
        os.write(master, b"n\n")
        rest = read_until(master, b"--install-comfyui")
        assert proc.wait(60) == 2
    finally:
        os.close(master)
    assert b"Traceback" not in asked + rest
    assert not (tmp_path / "comfy").exists()


def fake_comfyui_repo(root: Path) -> Path:
    """A git repo that comfy-cli accepts as ComfyUI (its marker files) and that needs no
    torch: its main.py says why it cannot start, as a real one without torch would."""
    for folder in ("comfy", "comfy_extras", "comfy_api"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "nodes.py").write_text("")
    (root / "comfyui_version.py").write_text('__version__ = "0.0.1-test"\n')
    (root / "requirements.txt").write_text("# nothing: this stand-in imports no package\n")
    (root / "main.py").write_text(
        "import sys\nprint('stand-in ComfyUI: cannot start without torch', flush=True)\n"
        "sys.exit(1)\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "stand-in ComfyUI"], cwd=root, check=True)
    return root


def test_install_comfyui_with_comfy_cli_from_a_local_clone(tmp_path: Path) -> None:
    """--install-comfyui on a machine without ComfyUI: comfy-cli clones it into the default
    workspace with its own .venv, which discovery then finds; a ComfyUI that cannot start
    is reported with its log tail, by the worker and by the local ComfyUI alike."""
    home = tmp_path / "home"
    source = fake_comfyui_repo(tmp_path / "source")
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "COMFYUI_PATH", "COMFYUI_PATHS")}
    env.update(HOME=str(home), REMOTE_EXEC_STATE_DIR=str(tmp_path / "state"))
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    installed = run("--install-comfyui", "--port", str(free_port()), "--comfyui-url", str(source),
                    "--comfy-cli-args=--skip-torch-or-directml --skip-manager", env=env,
                    timeout=900)
    output = installed.stdout + installed.stderr
    found = find_comfyui(None, env={}, home=home)
    assert found.root == (home / "comfy" / "ComfyUI").resolve()
    assert found.python.parent.parent.name == ".venv", "comfy-cli made ComfyUI its own venv"
    assert installed.returncode == 3, output  # the local worker's ComfyUI cannot start
    assert "cannot import torch" in output
    assert "ComfyUI exited with code 1 before it was ready" in output
    assert "stand-in ComfyUI: cannot start without torch" in output
    assert "Traceback" not in output
    again = run("--backend", "http", "--url", "http://127.0.0.1:9", "--no-install",
                "--port", str(free_port()), env=env, timeout=300)
    assert again.returncode == 4, again.stderr
    assert "installing" not in again.stderr
    report = again.stderr[again.stderr.index("[launcher] ComfyUI exited with code 1"):]
    assert "stand-in ComfyUI: cannot start without torch" in report
    assert "Traceback" not in again.stdout + again.stderr


def run_on(comfy: ComfyInstall, tmp_path: Path, *comfy_args: str
           ) -> subprocess.CompletedProcess[str]:
    """The launcher on a real ComfyUI, http backend (no worker), with `comfy_args`."""
    port = free_port()
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), "--comfyui", str(comfy.root), "--port", str(port),
         "--backend", "http", "--url", "http://127.0.0.1:9", "--",
         "--base-directory", str(tmp_path / "local"), *comfy_args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "REMOTE_EXEC_STATE_DIR": str(tmp_path / "state")})
    with pytest.raises(httpx.ConnectError):  # and nothing is left running
        httpx.get(f"http://127.0.0.1:{port}/system_stats")
    return result


@pytest.mark.comfyui
def test_a_comfyui_that_fails_to_start_is_reported_with_its_log_tail(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    result = run_on(comfy_install, tmp_path, "--cpu", "--no-such-comfyui-flag")
    assert result.returncode == 4
    report = result.stderr[result.stderr.index("[launcher] ComfyUI exited with code 2 "):]
    assert "unrecognized arguments: --no-such-comfyui-flag" in report
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.comfyui
def test_an_extension_that_did_not_load_is_an_error_not_a_local_run(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    result = run_on(comfy_install, tmp_path, "--cpu", "--disable-all-custom-nodes")
    assert result.returncode == 4
    [line] = [line for line in result.stderr.splitlines() if "did not load" in line]
    assert line.startswith("[launcher] ") and "/remote_exec/status" in line
    assert "ready:" not in result.stderr


@pytest.mark.comfyui
def test_without_a_gpu_both_comfyuis_run_with_cpu_said_once(comfy_install: ComfyInstall,
                                                             tmp_path: Path) -> None:
    if probe_torch(comfy_install.python).accelerators:
        pytest.skip("this machine has a GPU")
    handle = launch(comfy_install, tmp_path, cpu=False)
    try:
        stats = httpx.get(f"{handle.url}/system_stats").json()
    finally:
        stop(handle)
    said = [line for line in handle.lines if "--cpu" in line and "no GPU" in line]
    assert len(said) == 1 and said[0].startswith("[launcher] "), said
    assert [d["type"] for d in stats["devices"]] == ["cpu"]
