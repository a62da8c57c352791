"""Bring up the real pieces the benchmark compares, side by side, on this machine.

- `HttpStack`: a worker (with a known ComfyUI port, so runs can also go
  straight to its ComfyUI) and a local ComfyUI with the extension on the
  `local` backend pointed at it: exactly what `launch.py --backend local` does.
- `RunpodStack`: the RunPod control-plane emulator, N SDK worker processes
  running our handler, and a local ComfyUI on the `runpod` backend.
- small measuring helpers: RSS sampling from /proc, a counting httpx transport.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.jobapi.spawn import start_worker, stop_worker, worker_command
from comfy_remote_exec.worker.comfy.comfy_process import ComfyProcess, free_port
from tests.conftest import prepare_worker_base
from tests.extension.conftest import local_comfy
from tests.runpod_emulator import RunpodEmulator

REPO = Path(__file__).resolve().parents[1]


@dataclass
class HttpStack:
    worker: subprocess.Popen[str]
    worker_url: str
    token: str
    comfy_url: str
    worker_base: Path
    local: ComfyProcess

    @classmethod
    async def start(cls, install: ComfyInstall, root: Path) -> HttpStack:
        worker_base = root / "worker"
        prepare_worker_base(worker_base)
        token = secrets.token_urlsafe(16)
        comfy_port = free_port()
        cmd = worker_command(python=sys.executable, comfyui=install.root,
                             comfy_python=install.python, base_dir=worker_base,
                             token_env="BENCH_WORKER_TOKEN",
                             extra=["--comfy-port", str(comfy_port)], comfy_args=["--cpu"])
        proc, url = await asyncio.to_thread(
            start_worker, cmd, env={**os.environ, "BENCH_WORKER_TOKEN": token})
        local = local_comfy(install, root / "local", {
            "REMOTE_EXEC_BACKEND": "local", "REMOTE_EXEC_URL": url, "REMOTE_EXEC_TOKEN": token,
            "REMOTE_EXEC_ENABLED": "1"})
        await local.start()
        return cls(worker=proc, worker_url=url, token=token,
                   comfy_url=f"http://127.0.0.1:{comfy_port}", worker_base=worker_base,
                   local=local)

    async def stop(self) -> None:
        await self.local.stop()
        await asyncio.to_thread(stop_worker, self.worker)


@dataclass
class RunpodStack:
    emulator: RunpodEmulator
    workers: list[subprocess.Popen[str]]
    local: ComfyProcess

    @classmethod
    async def start(cls, install: ComfyInstall, root: Path, count: int) -> RunpodStack:
        emulator = RunpodEmulator(endpoint="ep-bench")
        emulator.start()
        procs = []
        for i in range(count):
            base = root / f"rp-worker-{i}"
            prepare_worker_base(base)
            env = {**os.environ, **emulator.worker_env(f"worker-{i}"),
                   "COMFYUI_PATH": str(install.root), "COMFYUI_PYTHON": str(install.python),
                   "REMOTE_EXEC_BASE_DIR": str(base), "REMOTE_EXEC_COMFY_ARGS": "--cpu",
                   "PYTHONPATH": os.pathsep.join(  # a caller's own entries go on too
                       p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
                   "PYTHONUNBUFFERED": "1"}
            log = root / f"rp-worker-{i}.log"
            with log.open("w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "comfy_remote_exec.platforms.runpod.handler"],
                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO))
        # Every worker is ready once it has asked for a job.
        deadline = time.monotonic() + 300
        while len(_takers(emulator)) < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                for proc in procs:
                    proc.kill()
                emulator.stop()
                raise RuntimeError(f"RunPod SDK workers did not all start; see {root}")
            await asyncio.sleep(0.2)
        local = local_comfy(install, root / "rp-local", {
            "REMOTE_EXEC_BACKEND": "runpod", "REMOTE_EXEC_URL": emulator.endpoint,
            "RUNPOD_API_KEY": emulator.api_key, "RUNPOD_API_BASE": emulator.api_base,
            "REMOTE_EXEC_ENABLED": "1"})
        await local.start()
        return cls(emulator=emulator, workers=procs, local=local)

    async def stop(self) -> None:
        await self.local.stop()
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:  # all told at once, then each waited for
            stop_worker(proc)
        self.emulator.stop()


def _takers(emulator: RunpodEmulator) -> set[str]:
    return {path.rsplit("/", 1)[-1] for method, path in list(emulator.requests)
            if "/job-take" in path}


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples a process's RSS every few milliseconds on a thread; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        self.pid, self.every = pid, every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of `root` and every process below it, with the
    children they have reaped (a process that ended unreaped by us is missed)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = _stat_fields(proc.name)
        except (OSError, IndexError):
            continue
        parents[int(proc.name)] = int(fields[1])
        times[int(proc.name)] = sum(int(x) for x in fields[11:15]) / TICK
    total = 0.0
    for pid, cpu in times.items():
        p = pid
        while p > 1 and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


class Foreign:
    """CPU that processes outside this benchmark's process tree used over a window."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.busy, self.mine = machine_busy_s(), tree_cpu_s(os.getpid())

    def share(self) -> float:
        """Foreign CPU as a share of one core, since the start."""
        wall = time.monotonic() - self.began
        foreign = (machine_busy_s() - self.busy) - (tree_cpu_s(os.getpid()) - self.mine)
        return max(0.0, foreign) / max(wall, 1e-6)


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the bytes of requests sent and responses received (headers included)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent = 0
        self.received = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
        self.sent += len(head.encode())
        if isinstance(request.stream, httpx.ByteStream):
            self.sent += len(request.content)
        response = await self.inner.handle_async_request(request)
        self.received += len("HTTP/1.1 200 OK\r\n\r\n") + sum(
            len(k) + len(v) + 4 for k, v in response.headers.raw)
        counter = self

        class Counted(httpx.AsyncByteStream):
            async def __aiter__(self) -> Any:
                async for chunk in response.stream:  # type: ignore[union-attr]
                    counter.received += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await response.aclose()

        return httpx.Response(response.status_code, headers=response.headers,
                              stream=Counted(), extensions=response.extensions)

    async def aclose(self) -> None:
        await self.inner.aclose()
