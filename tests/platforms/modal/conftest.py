"""The Modal API layer run here: `local.start_local` (the Modal app's API and GPU-side
code over the stand-ins, with a real ComfyUI) on its own event loop in a thread, as the
API runs in its container; the tests talk HTTP to it over loopback and reach the
stand-ins (thread-safe) and that loop (`ModalRun.call`) directly."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.platforms.modal.api import ModalApi
from comfy_remote_exec.platforms.modal.local import LocalModal, cut_middleware, start_local

from ...conftest import TOKEN, prepare_worker_base

T = TypeVar("T")
TERMINAL = {"completed", "failed", "cancelled"}
STREAM_LIMIT = 1.5  # the API ends event streams this often: every longer job resumes
CUT_AFTER = 6.0  # and "Modal" cuts any request after this (DELETE waits up to 5 s)


@dataclass
class ModalRun:
    local: LocalModal
    loop: asyncio.AbstractEventLoop
    base: Path  # the GPU side's ComfyUI base directory
    state: Path
    url: str = ""
    client: httpx.Client = field(default=None)  # type: ignore[assignment]
    runners: list[web.AppRunner] = field(default_factory=list)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run `coro` on the Modal layer's loop and wait for it."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def serve(self, api: ModalApi, cut_after: float | None = CUT_AFTER) -> str:
        if cut_after:
            api.app.middlewares.insert(0, cut_middleware(cut_after))
        runner = web.AppRunner(api.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    def use(self, url: str) -> None:
        if self.client is not None:
            self.client.close()
        self.url = url
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                                   timeout=30.0)


def start_thread(install: ComfyInstall, root: Path) -> ModalRun:
    base, state = root / "gpu-base", root / "modal"
    prepare_worker_base(base)
    ready: Future[ModalRun] = Future()
    loop = asyncio.new_event_loop()

    async def start() -> None:
        try:
            local = await start_local(install, base, state, token=TOKEN, comfy_args=["--cpu"],
                                      stream_limit=STREAM_LIMIT, cut_after=None, idle=1.0)
            run = ModalRun(local, loop, base, state)
            run.use(await run.serve(local.api))
            ready.set_result(run)
        except BaseException as exc:
            ready.set_exception(exc)

    def main() -> None:
        asyncio.set_event_loop(loop)
        starting = loop.create_task(start())
        loop.run_forever()
        del starting

    threading.Thread(target=main, name="modal-local", daemon=True).start()
    return ready.result(300)


def stop_thread(run: ModalRun) -> None:
    async def stop() -> None:
        for runner in run.runners:
            await runner.cleanup()
        await run.local.close()

    try:
        run.call(stop(), timeout=120)
    finally:
        run.client.close()
        run.loop.call_soon_threadsafe(run.loop.stop)


@pytest.fixture(scope="module")
def modal_run(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[ModalRun]:
    run = start_thread(comfy_install, tmp_path_factory.mktemp("modal"))
    yield run
    stop_thread(run)


def follow(client: httpx.Client, job_id: str, timeout: float = 90.0
           ) -> tuple[list[dict[str, Any]], int]:
    """A job's events to its end, resuming (`after=`) each time a stream ends or is cut,
    as the extension's client does; returns them and how many streams it took."""
    events: list[dict[str, Any]] = []
    streams = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        streams += 1
        after = events[-1]["seq"] if events else 0
        try:
            with client.stream("GET", f"/v1/jobs/{job_id}/events", params={"after": after},
                               timeout=httpx.Timeout(30.0)) as resp:
                assert resp.status_code == 200, resp.read()
                for line in resp.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    events.append(event)
                    if event["type"] == "job_status" and event["data"]["status"] in TERMINAL:
                        return events, streams
        except httpx.TransportError:
            continue  # cut: resume after the last event
    raise TimeoutError(f"job {job_id} did not end within {timeout} s")


def wait_status(client: httpx.Client, job_id: str, statuses: set[str],
                timeout: float = 60.0) -> dict[str, Any]:
    """Poll the job view (as the job API's clients do) until its status is one of these."""
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/v1/jobs/{job_id}", params={"inline": "none"}).json()
        if view["status"] in statuses:
            return dict(view)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is {view['status']}, not {statuses}")
        time.sleep(0.05)
