"""ComfyUI's Python environment: this extension's requirements, and its torch device.

Standard library only: the launcher calls it before anything is installed in
ComfyUI's Python, and the tests use the same functions, so a test never relies
on another test (or an earlier launcher run) having installed the requirements.

- `ensure_requirements` checks with one import in ComfyUI's Python and installs
  `requirements.txt` there with pip when something is missing (under a file
  lock, so two processes never run pip in the same environment at once).
- `device_args` runs a tiny torch probe in ComfyUI's Python. When torch finds
  no accelerator (CUDA/ROCm, MPS, XPU, NPU, MLU), ComfyUI needs `--cpu`, or it
  exits at start; the caller prints the one line this returns. An explicit
  device flag from the user skips the probe, and so does snapshot mode
  (`SNAPSHOT_ENV=1`): there the worker's ComfyUI hook starts ComfyUI on the CPU
  itself and takes the GPU at the restore, and a `--cpu` on the command line
  would read as the user's choice and keep it on the CPU after the restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RemoteExecError

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements.txt"
# Checks, in ComfyUI's Python, that every distribution named in requirements.txt is
# installed (the file is the one list; versions are pip's business when it installs).
HAS_DISTRIBUTIONS = "import sys, importlib.metadata as m; [m.distribution(n) for n in sys.argv[1:]]"
# ComfyUI options by which the user already chose a device: no probe then.
DEVICE_FLAGS = frozenset({"--cpu", "--directml", "--cuda-device", "--default-device",
                          "--oneapi-device-selector", "--gpu-only"})
# Snapshot mode for the worker's ComfyUI (Modal memory snapshots): see
# worker/comfy/comfyui_nodes/remote_exec_worker/snapshot/ (which keeps the same name).
SNAPSHOT_ENV = "REMOTE_EXEC_SNAPSHOT"
PROBE_TIMEOUT = 180.0
PROBE_MARK = "remote-exec-torch-probe"
PROBE = f"""\
import torch
found = []
for name in ("cuda", "xpu", "npu", "mlu"):
    try:
        if name in ("npu", "mlu"):
            __import__("torch_" + name)
        if getattr(torch, name).is_available():
            found.append(name)
    except Exception:
        pass
try:
    if torch.backends.mps.is_available():
        found.append("mps")
except Exception:
    pass
print("{PROBE_MARK}", torch.__version__, ",".join(found) or "-")
"""


def custom_nodes_config(path: Path, section: str, nodes: Path) -> Path:
    """Write an `--extra-model-paths-config` file that makes ComfyUI load the custom
    nodes in `nodes` too, beside its own (the way to add code to a ComfyUI without
    touching its folders). Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{section}:\n  custom_nodes: {json.dumps(str(nodes))}\n",
                    encoding="utf-8")
    return path


def extension_config(folder: Path) -> Path:
    """An extra-paths file under `folder` whose custom_nodes folder holds only a link to
    this repository: ComfyUI loads the extension from it (launcher and tests)."""
    nodes = folder / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / "comfy-remote-exec"
    if link.is_symlink() and link.resolve() != REPO:
        link.unlink()
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return custom_nodes_config(folder / "extra_model_paths.yaml", "comfy_remote_exec", nodes)


class ComfyEnvError(RemoteExecError):
    code = "comfyui_environment"


def required_names(path: Path = REQUIREMENTS) -> list[str]:
    """The distribution names in a requirements file (comments and versions left out)."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            names.append(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
    return names


def has_requirements(python: str | os.PathLike[str]) -> bool:
    return subprocess.run([str(python), "-c", HAS_DISTRIBUTIONS, *required_names()],
                          capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


@contextlib.contextmanager
def _pip_lock(python: str | os.PathLike[str]) -> Iterator[None]:
    """One pip at a time per Python (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    key = hashlib.sha256(str(Path(python).absolute()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"comfy-remote-exec-pip-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_requirements(python: str | os.PathLike[str], *, install: bool = True,
                        say: Callable[[str], None] = print) -> bool:
    """Make sure ComfyUI's `python` can import this extension's requirements.

    Returns True when it installed them. Raises `ComfyEnvError` when they are
    missing and `install` is False, or when pip fails (pip's output is above).
    """
    if has_requirements(python):
        return False
    command = [str(python), "-m", "pip", "install", "-r", str(REQUIREMENTS)]
    if not install:
        raise ComfyEnvError(f"ComfyUI's Python ({python}) lacks this extension's "
                            f"requirements; install them with: {' '.join(command)}")
    with _pip_lock(python):
        if has_requirements(python):  # another process installed them meanwhile
            return False
        say(f"installing this extension's requirements into {python}")
        code = subprocess.run(command, stdin=subprocess.DEVNULL).returncode
    if code != 0 or not has_requirements(python):
        raise ComfyEnvError(f"could not install this extension's requirements into {python} "
                            f"(pip exited with {code}; its output is above). Run: "
                            f"{' '.join(command)}")
    return True


@dataclass
class TorchProbe:
    """What ComfyUI's torch sees: its version and accelerators, or why it could not tell."""

    torch: str | None = None
    accelerators: list[str] = field(default_factory=list)
    error: str | None = None


def probe_torch(python: str | os.PathLike[str], env: Mapping[str, str] | None = None,
                timeout: float = PROBE_TIMEOUT) -> TorchProbe:
    try:
        done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True,
                              env=None if env is None else dict(env), timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return TorchProbe(error=f"importing torch took more than {timeout:.0f} s")
    except OSError as exc:
        return TorchProbe(error=f"cannot run {python}: {exc}")
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == PROBE_MARK:
            found = [] if parts[2] == "-" else parts[2].split(",")
            return TorchProbe(torch=parts[1], accelerators=found)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return TorchProbe(error=lines[-1].strip() if lines else f"exit code {done.returncode}")


def has_device_flag(comfy_args: Sequence[str]) -> bool:
    return any(arg.split("=", 1)[0] in DEVICE_FLAGS for arg in comfy_args)


def device_args(python: str | os.PathLike[str], comfy_args: Sequence[str],
                env: Mapping[str, str] | None = None) -> tuple[list[str], str | None]:
    """ComfyUI arguments to add for this machine's device, and the one line to print.

    `(["--cpu"], line)` when torch finds no accelerator; `([], None)` when it
    finds one or the user chose a device; `([], line)` when the probe failed or
    in snapshot mode (`SNAPSHOT_ENV=1` in `env`, else in os.environ).
    """
    if has_device_flag(comfy_args):
        return [], None
    if (os.environ if env is None else env).get(SNAPSHOT_ENV) == "1":
        return [], ("snapshot mode: ComfyUI starts on the CPU with CUDA held back, "
                    "and takes the GPU when restored")
    probe = probe_torch(python, env)
    if probe.error is not None:
        if "No module named 'torch'" in probe.error:
            return [], (f"ComfyUI's Python ({python}) cannot import torch, so ComfyUI will "
                        "not start; install torch there (see ComfyUI's README)")
        return [], (f"could not ask ComfyUI's torch for a GPU ({probe.error}); "
                    "starting ComfyUI without --cpu")
    if probe.accelerators:
        return [], None
    return ["--cpu"], (f"ComfyUI's torch {probe.torch} finds no GPU (CUDA/ROCm, MPS or "
                       "XPU): running ComfyUI with --cpu")

