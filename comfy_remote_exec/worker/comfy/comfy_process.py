"""A supervised headless ComfyUI child process.

ComfyUI runs as a child with its own `--base-directory` and port, so the
worker's models, inputs and outputs never mix with anyone else's. This module
starts it, waits for `/system_stats` with backoff, keeps the last lines of its
log for error reports, and restarts it when it dies unexpectedly. Listeners
hear about a crash before the restart, so the job that was running can be
failed with the log tail that explains why. Without a device flag in its arguments, ComfyUI
gets `--cpu` when its torch finds no accelerator (`comfy_env.device_args`,
probed once, said in one log line), since ComfyUI exits at start otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ...comfy_env import device_args
from ...discovery import ComfyInstall
from ...errors import RemoteUnavailable
from ...jobapi.spawn import die_with_parent
from ...plaintext import strip_ansi

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ComfyProcessConfig:
    install: ComfyInstall
    base_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    extra_args: Sequence[str] = ()
    start_timeout: float = 180.0
    restart: bool = True
    env: dict[str, str] = field(default_factory=dict)


CrashListener = Callable[[int | None, list[str]], Awaitable[None]]


class ComfyProcess:
    """Start, watch and restart one ComfyUI. `url` is valid once `start()` returns."""

    def __init__(self, config: ComfyProcessConfig) -> None:
        self.config = config
        self.port = config.port or free_port(config.host)
        self.url = f"http://{config.host}:{self.port}"
        self.log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._healthy = asyncio.Event()
        self._listeners: list[CrashListener] = []
        self._device_args: list[str] | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    def on_crash(self, listener: CrashListener) -> None:
        self._listeners.append(listener)

    def tail(self, lines: int = 50) -> list[str]:
        return list(self.log_tail)[-lines:]

    def command(self) -> list[str]:
        cfg = self.config
        return [
            str(cfg.install.python), "-u", str(cfg.install.main_py),
            "--base-directory", str(cfg.base_dir),
            "--listen", cfg.host, "--port", str(self.port),
            "--disable-auto-launch",
            *(self._device_args or ()), *cfg.extra_args,
        ]

    async def start(self) -> None:
        self._stopping = False
        if self._device_args is None:
            env = {**os.environ, **self.config.env}
            self._device_args, note = await asyncio.to_thread(
                device_args, self.config.install.python, self.config.extra_args, env)
            if note:
                log.warning("%s", note)
        await self._spawn()
        await self.wait_healthy(self.config.start_timeout)
        self._supervisor = asyncio.create_task(self._supervise(), name="comfyui-supervisor")

    async def _spawn(self) -> None:
        base = self.config.base_dir
        # ComfyUI exits at start if its base directory lacks custom_nodes/.
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.config.env}
        self._healthy.clear()
        self.log_tail.append(f"[remote-exec] starting ComfyUI on port {self.port}")
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(), cwd=str(self.config.install.root), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read_log(self._proc), name="comfyui-log")

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = strip_ansi(raw.decode("utf-8", "replace")).rstrip()
            self.log_tail.append(line)
            log.debug("comfyui: %s", line)

    async def wait_healthy(self, timeout: float) -> None:
        """Poll `/system_stats` with exponential backoff until it answers."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        async with aiohttp.ClientSession() as session:
            while True:
                proc = self._proc
                if proc is None or proc.returncode is not None:
                    if self._reader:
                        await asyncio.wait([self._reader], timeout=2)
                    raise RemoteUnavailable(
                        f"ComfyUI exited with code {proc.returncode if proc else None} "
                        "before it was ready", code="comfyui_start_failed",
                        log_tail=self.tail())
                if await self._probe(session):
                    self._healthy.set()
                    return
                if time.monotonic() > deadline:
                    raise RemoteUnavailable(f"ComfyUI was not ready after {timeout:.0f} s",
                                            code="comfyui_start_timeout", log_tail=self.tail())
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 1.0)

    async def _probe(self, session: aiohttp.ClientSession, path: str = "/system_stats") -> bool:
        try:
            async with session.get(f"{self.url}{path}",
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def probe(self, session: aiohttp.ClientSession | None = None) -> bool:
        """One cheap health check (`/queue`), used before each job."""
        if session is None:
            async with aiohttp.ClientSession() as own:
                ok = await self._probe(own, "/queue")
        else:
            ok = await self._probe(session, "/queue")
        if not ok:
            self._healthy.clear()
        return ok

    async def ensure_healthy(self, timeout: float | None = None,
                             session: aiohttp.ClientSession | None = None) -> None:
        """Probe, or wait for a (re)starting ComfyUI; raise if it does not come back."""
        if self._healthy.is_set() and await self.probe(session):
            return
        try:
            await asyncio.wait_for(self._healthy.wait(),
                                   timeout or self.config.start_timeout)
        except asyncio.TimeoutError:
            raise RemoteUnavailable("ComfyUI is not healthy", code="comfyui_unhealthy",
                                    log_tail=self.tail()) from None

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._reader:
                await asyncio.wait([self._reader], timeout=2)
            if self._stopping:
                return
            self._healthy.clear()
            tail = self.tail()
            log.error("ComfyUI exited unexpectedly with code %s", code)
            self.log_tail.append(f"[remote-exec] ComfyUI exited with code {code}")
            for listener in list(self._listeners):
                try:
                    await listener(code, tail)
                except Exception:
                    log.exception("crash listener failed")
            if not self.config.restart:
                return
            ran_for = time.monotonic() - (self.started_at or 0)
            delay = 1.0 if ran_for > 60 else min(delay * 2, 30.0)
            while not self._stopping:
                self.restarts += 1
                try:
                    await self._spawn()
                    await self.wait_healthy(self.config.start_timeout)
                    log.info("ComfyUI restarted (restart #%d)", self.restarts)
                    break
                except RemoteUnavailable as exc:
                    log.error("ComfyUI restart failed: %s", exc)
                    await self._kill()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    async def _kill(self, grace: float = 10.0) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def stop(self) -> None:
        self._stopping = True
        self._healthy.clear()
        await self._kill()
        for task in (self._supervisor, self._reader):
            if task and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
