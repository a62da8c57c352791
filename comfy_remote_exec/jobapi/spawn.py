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


class StartingWorker:
    """A worker process spawned now, whose ready line is waited for later.

    The process is started in the calling thread: on Linux it is told to die
    with that thread (PR_SET_PDEATHSIG follows the thread that forked), so
    spawn from a thread that lives as long as the owner, such as the main one.
    `wait` may then be called from any thread.
    """

    def __init__(self, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                 sink: Callable[[str], None] | None = None) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, full_env.get("PYTHONPATH", "")) if p)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.cmd = list(cmd)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, env=full_env,
                                     preexec_fn=die_with_parent
                                     if sys.platform.startswith("linux") else None)
        self._ready: queue.Queue[str] = queue.Queue()
        self._tail: list[str] = []
        self._sink = sink
        threading.Thread(target=self._pump, name="worker-output", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._tail.append(line)
            del self._tail[:-50]
            if self._sink is not None:
                self._sink(line)
            if line.startswith(READY):
                self._ready.put(line[len(READY):].strip())
        self._ready.put("")

    def wait(self, timeout: float = 180.0) -> str:
        """The worker's URL once it is ready; else it is stopped and this raises."""
        try:
            url = self._ready.get(timeout=timeout)
        except queue.Empty:
            url = ""
        if not url:
            stop_worker(self.proc)
            raise WorkerStartError("the worker did not start:\n" + "".join(self._tail[-30:]))
        self._ready.put(url)  # a second wait answers the same
        return url


def start_worker(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                 timeout: float = 180.0, sink: Callable[[str], None] | None = None,
                 ) -> tuple[subprocess.Popen[str], str]:
    """Run `cmd`, return the process and its URL once it prints the ready line."""
    starting = StartingWorker(cmd, env=env, sink=sink)
    return starting.proc, starting.wait(timeout)


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
