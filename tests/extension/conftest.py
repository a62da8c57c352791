"""Fixtures for the extension: a local ComfyUI started by the launcher, and its client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from comfy_remote_exec.comfy_env import ensure_requirements
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.plaintext import strip_ansi
from comfy_remote_exec.worker.comfy.comfy_process import ComfyProcess, ComfyProcessConfig, free_port

from ..conftest import TOKEN, WorkerHandle, prepare_worker_base
from .frontends import NEWEST, PINNED, FrontendUnavailable, frontend_root, serves_jobs_api

REPO = Path(__file__).resolve().parents[2]
# The launcher prints this once ComfyUI answers and the extension's routes are there.
LAUNCHER_READY = "[launcher] ready: "
# The launched ComfyUIs register a toy backend from the tests (tests/fixtures/toy_backend.py):
# it must reach the settings combo without any other file naming it.
TOY_BACKEND = {"REMOTE_EXEC_BACKEND_MODULES": "tests.fixtures.toy_backend"}


def local_comfy(install: ComfyInstall, base: Path, env: dict[str, str],
                extension: bool = True, args: tuple[str, ...] = ()) -> ComfyProcess:
    """A local ComfyUI with its own base directory, with or without the extension linked
    into its custom_nodes (the launcher's way is `launch`; this one is for finer control).
    The extension's requirements go into ComfyUI's Python as the launcher installs them."""
    nodes = base / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / "comfy-remote-exec"
    if extension and not link.exists():
        ensure_requirements(install.python)
        link.symlink_to(REPO)
    return ComfyProcess(ComfyProcessConfig(install=install, base_dir=base,
                                           extra_args=["--cpu", *args], restart=False,
                                           env={"REMOTE_EXEC_STATE_DIR": str(base / "state"),
                                                **env}))


def http_env(worker: WorkerHandle) -> dict[str, str]:
    """The extension on the http backend, pointed at `worker`."""
    return {"REMOTE_EXEC_BACKEND": "http", "REMOTE_EXEC_URL": worker.url,
            "REMOTE_EXEC_TOKEN": TOKEN, "REMOTE_EXEC_ENABLED": "1"}


@dataclass
class Launched:
    """A launcher process: local ComfyUI at `url` with the extension, plus its worker."""

    url: str
    proc: subprocess.Popen[str]
    local: Path
    worker: Path
    lines: list[str] = field(default_factory=list)

    def local_lines(self) -> list[str]:
        """Output of the local ComfyUI and launcher (the worker's is prefixed)."""
        return [line for line in self.lines if not line.startswith("[worker]")]

    def prompts_logged(self) -> int:
        """How often the local ComfyUI's own /prompt handler ran ("got prompt", a line
        whose prefix v0.26 colours)."""
        return sum(strip_ansi(line).rstrip().endswith("got prompt")
                   for line in self.local_lines())


def launch(comfy: ComfyInstall, root: Path, *launcher_args: str,
           env: dict[str, str] | None = None, comfy_args: tuple[str, ...] = (),
           cpu: bool = True) -> Launched:
    """Start the launcher; `comfy_args` go to ComfyUI (after its `--`), e.g. a frontend root.
    `cpu=False` leaves the device to the launcher's torch probe."""
    local, worker, state = root / "local", root / "worker", root / "state"
    (local / "custom_nodes").mkdir(parents=True, exist_ok=True)
    prepare_worker_base(worker)
    port = free_port()
    cmd = [sys.executable, str(REPO / "launcher" / "launch.py"), "--comfyui", str(comfy.root),
           "--port", str(port), "--worker-dir", str(worker), *launcher_args,
           "--", *(["--cpu"] if cpu else []), "--base-directory", str(local), *comfy_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "REMOTE_EXEC_STATE_DIR": str(state),
                                 **(env or {})}, start_new_session=True)
    handle = Launched(url=f"http://127.0.0.1:{port}", proc=proc, local=local, worker=worker)
    ready: queue.Queue[bool] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.lines.append(line)
            if line.startswith(LAUNCHER_READY):
                ready.put(True)
        ready.put(False)

    threading.Thread(target=pump, daemon=True).start()
    try:
        ok = ready.get(timeout=300)
    except queue.Empty:
        ok = False
    if not ok:
        stop(handle)
        raise RuntimeError("the launcher did not bring ComfyUI up:\n" +
                           "".join(handle.lines[-60:]))
    return handle


def stop(handle: Launched) -> None:
    if handle.proc.poll() is None:
        handle.proc.send_signal(signal.SIGTERM)
        try:
            handle.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(handle.proc.pid, signal.SIGKILL)
            handle.proc.wait()


@pytest.fixture(scope="session")
def launched(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Launched]:
    handle = launch(comfy_install, tmp_path_factory.mktemp("launched"), env=TOY_BACKEND)
    yield handle
    stop(handle)


@pytest.fixture(scope="session", params=[PINNED, NEWEST])
def ui(request: pytest.FixtureRequest, comfy_install: ComfyInstall,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """A launched ComfyUI per frontend for the browser tests: the session's own
    (`launched`) for the frontend the ComfyUI pins, one more with `--front-end-root`
    for the newest release (installed with pip into pytest's cache)."""
    if request.param == PINNED:
        yield request.getfixturevalue("launched")
        return
    if not serves_jobs_api(comfy_install):
        pytest.skip(f"frontend {request.param} needs a ComfyUI that serves /api/jobs (0.26+)")
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    try:
        root = frontend_root(request.param, cache.mkdir("comfyui-frontend") if cache else
                             tmp_path_factory.mktemp("comfyui-frontend"))
    except FrontendUnavailable as exc:
        pytest.skip(str(exc))
    handle = launch(comfy_install, tmp_path_factory.mktemp("frontend"), env=TOY_BACKEND,
                    comfy_args=("--front-end-root", str(root)))
    yield handle
    stop(handle)


@dataclass
class Message:
    type: str
    data: Any
    binary: bytes | None = None


class LocalClient:
    """What a ComfyUI API client does: a WebSocket with a client_id, and POST /api/prompt.

    Each accepted prompt is checked against the extension's record of remote jobs:
    `remote=True` (the default) asserts that it went remote, `remote=False` that it
    ran locally, so a test never passes on a silent local run. Set per client or per
    `post`/`run`.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, client_id: str | None = None,
                 preview_metadata: bool = True, remote: bool = True) -> None:
        self.url = url
        self.session = session
        self.client_id = client_id or uuid.uuid4().hex
        self.preview_metadata = preview_metadata
        self.remote = remote
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self) -> None:
        self._ws = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}")
        if self.preview_metadata:
            await self._ws.send_json({"type": "feature_flags",
                                      "data": {"supports_preview_metadata": True}})
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await self.messages.put(Message("binary", None, msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                await self.messages.put(Message(data["type"], data.get("data")))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()

    async def post(self, prompt: dict[str, Any], remote: bool | None = None,
                   **extra: Any) -> dict[str, Any]:
        body = {"prompt": prompt, "client_id": self.client_id, **extra}
        async with self.session.post(f"{self.url}/api/prompt", json=body) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        await self.assert_where(answer["prompt_id"], self.remote if remote is None else remote)
        return dict(answer)

    async def assert_where(self, prompt_id: str, remote: bool) -> None:
        """The prompt is (or is not) one of the extension's remote jobs."""
        async with self.session.get(f"{self.url}/remote_exec/jobs/{prompt_id}") as resp:
            found = resp.status
        assert found == (200 if remote else 404), (
            f"prompt {prompt_id} should run {'remotely' if remote else 'locally'}, but "
            f"GET /remote_exec/jobs/{prompt_id} answered {found}"
            + (" (did the extension fail to load?)" if remote else ""))

    async def until_end(self, prompt_id: str, timeout: float = 90.0,
                        on: Any = None) -> list[Message]:
        """Messages up to this prompt's `executing` with `node: null`."""
        seen: list[Message] = []

        async def collect() -> None:
            while True:
                msg = await self.messages.get()
                seen.append(msg)
                if on is not None:
                    await on(msg)
                if (msg.type == "executing" and isinstance(msg.data, dict)
                        and msg.data.get("node") is None
                        and msg.data.get("prompt_id") == prompt_id):
                    return

        await asyncio.wait_for(collect(), timeout)
        return seen

    async def run(self, prompt: dict[str, Any], timeout: float = 90.0,
                  remote: bool | None = None, **extra: Any) -> tuple[str, list[Message]]:
        prompt_id = (await self.post(prompt, remote, **extra))["prompt_id"]
        return prompt_id, await self.until_end(prompt_id, timeout)

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.url}{path}") as resp:
            return await resp.json()


@contextlib.asynccontextmanager
async def connected(url: str, client_id: str | None = None, preview_metadata: bool = True,
                    remote: bool = True) -> AsyncIterator[LocalClient]:
    """A `LocalClient` with its own HTTP session and an open WebSocket."""
    async with aiohttp.ClientSession() as session:
        client = LocalClient(url, session, client_id, preview_metadata, remote)
        await client.connect()
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
async def client(launched: Launched) -> AsyncIterator[LocalClient]:
    async with connected(launched.url) as local:
        yield local
