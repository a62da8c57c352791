"""Start a worker process and wait until it says where it listens.

Standard library only: the launcher uses it before any dependency is
installed, the `local` backend and the tests use it too. The worker's output
keeps being drained on a thread (and echoed to `sink`), so a chatty ComfyUI
can never block on a full pipe, and on Linux the worker dies with the process
that started it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

READY = "comfy-remote-exec worker ready at "


class WorkerStartError(RuntimeError):
    pass


def die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: have the kernel SIGTERM this child if its parent dies without cleaning up."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_command(*, python: str | os.PathLike[str], comfyui: str | os.PathLike[str],
                   comfy_python: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str],
                   host: str = "127.0.0.1", port: int = 0, token_env: str | None = None,
                   extra: Sequence[str] = (), comfy_args: Sequence[str] = ()) -> list[str]:
    cmd = [str(python), "-m", "comfy_remote_exec.worker", "--comfyui", str(comfyui),
           "--base-dir", str(base_dir), "--host", host, "--port", str(port)]
    if comfy_python:
        cmd += ["--python", str(comfy_python)]
    if token_env:
        cmd += ["--token-env", token_env]
    return [*cmd, *extra, "--", *comfy_args]


def start_worker(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                 timeout: float = 180.0, sink: Callable[[str], None] | None = None,
                 ) -> tuple[subprocess.Popen[str], str]:
    """Run `cmd`, return the process and its URL once it prints the ready line."""
    package_root = str(Path(__file__).resolve().parents[2])
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, full_env.get("PYTHONPATH", "")) if p)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, env=full_env,
                            preexec_fn=die_with_parent if sys.platform.startswith("linux")
                            else None)
    ready: queue.Queue[str] = queue.Queue()
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            del tail[:-50]
            if sink is not None:
                sink(line)
            if line.startswith(READY):
                ready.put(line[len(READY):].strip())
        ready.put("")

    threading.Thread(target=pump, name="worker-output", daemon=True).start()
    try:
        url = ready.get(timeout=timeout)
    except queue.Empty:
        url = ""
    if not url:
        stop_worker(proc)
        raise WorkerStartError("the worker did not start:\n" + "".join(tail[-30:]))
    return proc, url


def stop_worker(proc: subprocess.Popen[str], grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def echo(line: str) -> None:
    sys.stderr.write(f"[worker] {line}")
