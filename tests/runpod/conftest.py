"""Fixtures: the RunPod control-plane emulator, moto's S3 server, SDK worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.jobapi.spawn import stop_worker
from comfy_remote_exec.worker.comfy.comfy_process import free_port

from ..conftest import prepare_worker_base
from ..helpers import FIXTURES
from ..runpod_emulator import RunpodEmulator

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SdkWorker:
    proc: subprocess.Popen[str]
    cold_start: float
    log: Path
    base: Path | None = None


def start_sdk_worker(emulator: RunpodEmulator, args: list[str], env: dict[str, str],
                     log: Path, timeout: float = 180.0) -> SdkWorker:
    """A `runpod.serverless.start` worker process against the emulator; waits for its
    first job-take (the worker is then ready to accept jobs)."""
    emulator.first_take.clear()
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                text=True, cwd=REPO, env={
                                    **os.environ, **emulator.worker_env(), **env,
                                    "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    if not emulator.first_take.wait(timeout):
        proc.kill()
        raise RuntimeError("the SDK worker never asked for a job:\n" + log.read_text()[-4000:])
    return SdkWorker(proc=proc, cold_start=time.monotonic() - started,
                     log=log)


@pytest.fixture(scope="session")
def emulator() -> Iterator[RunpodEmulator]:
    emu = RunpodEmulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, str]]:
    """moto's real S3 server on loopback, with one bucket."""
    server_mod = pytest.importorskip("moto.server", reason="needs moto[server]")
    import boto3

    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"BUCKET_ENDPOINT_URL": f"http://127.0.0.1:{port}/outputs",
           "BUCKET_ACCESS_KEY_ID": "test-access", "BUCKET_SECRET_ACCESS_KEY": "test-secret"}
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="test-access",
                 aws_secret_access_key="test-secret").create_bucket(Bucket="outputs")
    yield env
    server.stop()


@pytest.fixture(scope="session")
def echo(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[RunpodEmulator, SdkWorker]]:
    """An emulator of its own with a tiny echo handler under the real SDK loop."""
    emu = RunpodEmulator(endpoint="ep-echo")
    emu.start()
    log = tmp_path_factory.mktemp("echo") / "worker.log"
    worker = start_sdk_worker(emu, [str(FIXTURES / "echo_handler.py")], {}, log, 60)
    yield emu, worker
    stop_worker(worker.proc)
    emu.stop()


@pytest.fixture(scope="session")
def comfy_worker(comfy_install: ComfyInstall, emulator: RunpodEmulator, s3: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkWorker]:
    """Our handler under the real SDK loop, on a real ComfyUI, with a bucket."""
    root = tmp_path_factory.mktemp("runpod-worker")
    base = root / "base"
    prepare_worker_base(base)
    env = {**s3, "COMFYUI_PATH": str(comfy_install.root),
           "COMFYUI_PYTHON": str(comfy_install.python), "REMOTE_EXEC_BASE_DIR": str(base),
           "REMOTE_EXEC_BLOB_DIR": str(root / "volume" / "blobs"),
           "REMOTE_EXEC_COMFY_ARGS": "--cpu", "REMOTE_EXEC_ALLOW_PRIVATE_URLS": "1",
           "REMOTE_EXEC_INLINE_LIMIT": str(2 * 1024 * 1024)}
    worker = start_sdk_worker(
        emulator, ["-m", "comfy_remote_exec.platforms.runpod.handler"], env, root / "worker.log")
    worker.base = base
    yield worker
    stop_worker(worker.proc)
