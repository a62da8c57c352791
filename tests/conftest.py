"""Shared fixtures: a real ComfyUI (or a skip saying how to get one) and a worker on it.

`comfy_install` is a session fixture with one param per ComfyUI under test
(`COMFYUI_PATHS`, see tests/installs.py). Every session fixture built on it is
per install too: pytest runs one install's tests together and tears its
fixtures (workers, launched ComfyUIs) down before the next install's start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.jobapi.spawn import start_worker as start_worker_process
from comfy_remote_exec.jobapi.spawn import stop_worker as stop_worker_process
from comfy_remote_exec.jobapi.spawn import worker_command

from .helpers import FIXTURES, sse_events, write_tiny_upscaler
from .installs import comfy_params

TOKEN = "test-token-not-a-secret"


@pytest.fixture(scope="session", params=comfy_params())
def comfy_install(request: pytest.FixtureRequest) -> ComfyInstall:
    if isinstance(request.param, str):
        pytest.skip(request.param)
    install: ComfyInstall = request.param
    return install


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run one install's tests after the other, keeping pytest's order within each.

    pytest's own grouping of parametrized session fixtures (it runs before this
    hook) can alternate installs when another session fixture has params too (the
    browser test's frontends), and each switch restarts that install's workers and
    ComfyUIs. Tests that use no ComfyUI go first."""
    def install_index(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        return int(callspec.indices.get("comfy_install", -1)) if callspec else -1

    items.sort(key=install_index)


def prepare_worker_base(base: Path) -> None:
    """A worker base directory: the tiny upscaler and the test nodes, nothing else."""
    write_tiny_upscaler(base / "models" / "upscale_models" / "tiny_compact_x2.safetensors")
    nodes = base / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / "remote_exec_testnodes"
    if not link.exists():
        link.symlink_to(FIXTURES / "custom_nodes" / "remote_exec_testnodes")


@dataclass
class WorkerHandle:
    url: str
    base: Path
    proc: subprocess.Popen[str]
    client: httpx.Client

    def comfy_pid(self) -> int:
        """The pid of the worker's ComfyUI child."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True, check=False).stdout.split()
        assert out, "the worker has no ComfyUI child"
        return int(out[0])

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def events(self, job_id: str, after: int = 0, timeout: float = 60.0,
               stop_after: int | None = None) -> list[dict[str, Any]]:
        return list(sse_events(self.client, f"/v1/jobs/{job_id}/events?after={after}",
                               timeout=timeout, stop_after=stop_after))

    def run(self, body: dict[str, Any], timeout: float = 60.0
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Submit, follow the stream to its end, return the final job and its events."""
        job_id = self.submit(body)["job_id"]
        events = self.events(job_id, timeout=timeout)
        job = self.client.get(f"/v1/jobs/{job_id}").json()
        return job, events


def start_worker(install: ComfyInstall, base: Path, *extra: str,
                 token: str | None = TOKEN) -> WorkerHandle:
    cmd = worker_command(python=sys.executable, comfyui=install.root,
                         comfy_python=install.python, base_dir=base,
                         token_env="REMOTE_EXEC_TEST_TOKEN" if token else None,
                         extra=extra, comfy_args=["--cpu"])
    proc, url = start_worker_process(cmd, env={**os.environ,
                                               "REMOTE_EXEC_TEST_TOKEN": token or ""})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=url, headers=headers, timeout=30.0)
    return WorkerHandle(url=url, base=base, proc=proc, client=client)


def stop_worker(handle: WorkerHandle) -> None:
    handle.client.close()
    stop_worker_process(handle.proc)


@pytest.fixture(scope="session")
def worker(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerHandle]:
    base = tmp_path_factory.mktemp("worker")
    prepare_worker_base(base)
    handle = start_worker(comfy_install, base)
    yield handle
    stop_worker(handle)
