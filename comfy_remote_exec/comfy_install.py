"""Install ComfyUI with comfy-cli, for a machine that has none (the launcher's offer).

Standard library only: the launcher runs it before any dependency exists.
comfy-cli is installed into a throw-away virtual environment, so nothing is
added to the user's own Python, and it is run as

    comfy --workspace DIR --skip-prompt install [--url URL] <device flag> [extra...]

with VIRTUAL_ENV and CONDA_PREFIX removed from its environment. comfy-cli then
creates `DIR/.venv` for ComfyUI (it only reuses an active virtual environment
or conda prefix, or its own Python when that is a plain system Python), which
is where `discovery.find_comfyui` looks for ComfyUI's Python. Under
`--skip-prompt` comfy-cli does not ask for the GPU kind and stops without one,
so the device flag comes from this machine (`--nvidia`, `--amd`, `--m-series`
or `--cpu`) unless the extra arguments name one. Telemetry is off
(`DO_NOT_TRACK=1`) unless the caller set it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import RemoteExecError

COMFY_CLI = "comfy-cli"
GPU_FLAGS = frozenset({"--nvidia", "--amd", "--m-series", "--intel-arc", "--cpu"})


class ComfyInstallError(RemoteExecError):
    code = "comfyui_install_failed"


def device_flag() -> str:
    """The comfy-cli flag for this machine's accelerator, judged without torch."""
    if sys.platform == "darwin":
        return "--m-series" if platform.machine() == "arm64" else "--cpu"
    if shutil.which("nvidia-smi"):
        return "--nvidia"
    if sys.platform.startswith("linux") and (shutil.which("rocminfo")
                                             or Path("/dev/kfd").exists()):
        return "--amd"
    return "--cpu"


def install_command(comfy: str | os.PathLike[str], workspace: Path, url: str | None = None,
                    extra: Sequence[str] = ()) -> list[str]:
    cmd = [str(comfy), "--workspace", str(workspace), "--skip-prompt", "install"]
    if url:
        cmd += ["--url", url]
    if not GPU_FLAGS.intersection(extra):
        cmd.append(device_flag())
    return [*cmd, *extra]


def comfy_cli_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "PYTHONPATH"):
        env.pop(name, None)
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def _run(cmd: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    try:
        code = subprocess.run(list(cmd), env=None if env is None else dict(env),
                              stdin=subprocess.DEVNULL).returncode
    except OSError as exc:
        raise ComfyInstallError(f"{what} could not run: {exc}") from None
    if code != 0:
        raise ComfyInstallError(f"{what} failed with exit code {code} (its output is above): "
                                f"{' '.join(cmd)}")


def install_comfyui(workspace: Path, *, url: str | None = None, extra: Sequence[str] = (),
                    say: Callable[[str], None] = print) -> None:
    """Install ComfyUI into `workspace` (which must not exist yet) with comfy-cli."""
    if workspace.exists():
        raise ComfyInstallError(f"{workspace} already exists and is not a ComfyUI install; "
                                "remove it or point --comfyui elsewhere")
    with tempfile.TemporaryDirectory(prefix="comfy-cli-") as tmp:
        tool = Path(tmp) / "venv"
        say(f"installing {COMFY_CLI} into a temporary environment")
        try:
            venv.EnvBuilder(with_pip=True).create(tool)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ComfyInstallError(f"could not create a virtual environment for {COMFY_CLI} "
                                    f"({exc}); on Debian/Ubuntu install python3-venv") from None
        bindir = tool / ("Scripts" if os.name == "nt" else "bin")
        python = bindir / ("python.exe" if os.name == "nt" else "python")
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              COMFY_CLI], f"pip install {COMFY_CLI}")
        cmd = install_command(bindir / "comfy", workspace, url, extra)
        say(f"installing ComfyUI into {workspace}: {' '.join(cmd[1:])}")
        _run(cmd, "comfy install", comfy_cli_env())
