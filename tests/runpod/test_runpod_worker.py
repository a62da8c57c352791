"""Acceptance: our handler on a real ComfyUI, under the real runpod SDK loop, via the emulator."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_remote_exec.backends.runpod import RunpodBackend
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.errors import Unauthorized
from comfy_remote_exec.protocol import (
    PROTOCOL_VERSION,
    Event,
    Executed,
    JobSpec,
    JobStatus,
    MediaItem,
    OutputFile,
)
from comfy_remote_exec.protocol.runpod import decode_error

from ..extension.conftest import Launched, connected, launch, stop
from ..helpers import png_bytes, workflow
from ..runpod_emulator import RunpodEmulator
from .conftest import REPO, SdkWorker

pytestmark = pytest.mark.comfyui


@pytest.fixture
async def backend(emulator: RunpodEmulator, comfy_worker: SdkWorker
                  ) -> AsyncIterator[RunpodBackend]:
    rp = RunpodBackend(emulator.endpoint, emulator.api_key, api_base=emulator.api_base)
    yield rp
    await rp.close()


async def run(backend: RunpodBackend, spec: JobSpec) -> tuple[str, list[Event]]:
    job_id = (await backend.submit(spec, {})).job_id
    return job_id, [event async for event in backend.events(job_id)]


def status(event: Event) -> str:
    assert isinstance(event.payload, JobStatus), event
    return event.payload.status


async def outputs(backend: RunpodBackend, job_id: str, events: list[Event]
                  ) -> list[tuple[OutputFile, bytes]]:
    found = []
    for event in events:
        for out in event.payload.files if isinstance(event.payload, Executed) else []:
            buf = io.BytesIO()
            await backend.download(job_id, out, buf)
            assert hashlib.sha256(buf.getvalue()).hexdigest() == out.sha256
            assert len(buf.getvalue()) == out.size_bytes
            found.append((out, buf.getvalue()))
    return found


async def test_workflows_through_the_sdk_loop(backend: RunpodBackend, emulator: RunpodEmulator,
                                              comfy_worker: SdkWorker) -> None:
    for name in ("invert", "upscale_tiny", "animated", "preview_any"):
        job_id, events = await run(backend, JobSpec(workflow=workflow(name)))
        assert [e.seq for e in events] == list(range(events[0].seq, events[-1].seq + 1))
        assert status(events[-1]) == "completed", events[-1]
        assert comfy_worker.base is not None
        # GPU seconds: RunPod's delayTime split into cold start and queue wait.
        end = events[-1].payload
        assert isinstance(end, JobStatus) and end.timing is not None
        emu = emulator.jobs[job_id]
        assert emu.started is not None
        assert end.timing.queue_wait_s + end.timing.cold_start_s == pytest.approx(
            int((emu.started - emu.created) * 1000) / 1000, abs=0.002)
        assert end.timing.execution_s > 0
        for out, data in await outputs(backend, job_id, events):
            assert (comfy_worker.base / out.folder / out.subfolder / out.filename).read_bytes() \
                == data
        if name == "upscale_tiny":
            assert any(e.type == "progress" for e in events)
            assert emulator.jobs[job_id].progress is not None, "progress_update reached /status"
        assert emulator.jobs[job_id].status == "COMPLETED"


async def test_inline_input_and_large_output_through_the_bucket(
        backend: RunpodBackend, s3: dict[str, str]) -> None:
    flow = workflow("load_scale")
    flow["4"] = {"class_type": "RemoteExecTestFile",
                 "inputs": {"name": "big.bin", "subfolder": "files", "size": 3_000_000}}
    image = png_bytes(size=(50, 40))
    spec = JobSpec(workflow=flow, media=[MediaItem(name="example.png",
                                                   data=base64.b64encode(image).decode())])
    job_id, events = await run(backend, spec)
    assert status(events[-1]) == "completed", events[-1]
    files = {out.filename: (out, data) for out, data in await outputs(backend, job_id, events)}
    big, data = files["big.bin"]
    assert big.download_url and big.download_url.startswith(
        s3["BUCKET_ENDPOINT_URL"].rsplit("/", 1)[0])
    assert big.data is None and big.size_bytes == len(data) == 3_000_000
    scaled = next(out for name, (out, _) in files.items() if name.startswith("scaled"))
    assert scaled.data is not None, "a small output travels inline"
    assert (scaled.folder, scaled.type, scaled.url) == ("output", "image", "")


async def test_cancel_stops_the_remote_job(backend: RunpodBackend, emulator: RunpodEmulator,
                                           comfy_worker: SdkWorker) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=200, step_seconds=0.05, previews=False)
    flow["1"]["inputs"]["color"] = 90210
    job_id = (await backend.submit(JobSpec(workflow=flow), {})).job_id
    seen = []
    async for event in backend.events(job_id):
        seen.append(event)
        if event.type == "progress" and len([e for e in seen if e.type == "progress"]) == 1:
            await backend.cancel(job_id)
    assert status(seen[-1]) == "cancelled"
    assert emulator.jobs[job_id].status == "CANCELLED"
    # The next job runs once ComfyUI is free: only after the stop reached the worker
    # (the stop channel, then the worker's own cancel, which interrupts ComfyUI).
    _, events = await run(backend, JobSpec(workflow=workflow("invert")))
    assert status(events[-1]) == "completed"
    assert comfy_worker.base is not None
    records = [json.loads(p.read_text())
               for p in (comfy_worker.base / "remote_exec" / "jobs").glob("*/job.json")]
    cancelled = [r for r in records if r["status"] == "cancelled"]
    assert cancelled and cancelled[0]["finished_at"] - cancelled[0]["started_at"] < 9


def test_a_job_of_another_protocol_version_fails_clearly(emulator: RunpodEmulator,
                                                        comfy_worker: SdkWorker) -> None:
    body = {"input": {"workflow": workflow("invert"), "protocol": PROTOCOL_VERSION + 1}}
    done = httpx.post(f"{emulator.api_base}/{emulator.endpoint}/runsync", json=body,
                      headers={"Authorization": f"Bearer {emulator.api_key}"},
                      timeout=120).json()
    assert done["status"] == "FAILED", done
    error = decode_error(done["error"])
    assert error.code == "protocol_mismatch" and "update this side" in error.message


def test_worker_comfyui_request_gets_a_worker_comfyui_answer(emulator: RunpodEmulator,
                                                             comfy_worker: SdkWorker) -> None:
    image = png_bytes(size=(30, 20), color=(1, 2, 3))
    body = {"input": {"workflow": workflow("load_scale"),
                      "images": [{"name": "example.png",
                                  "image": base64.b64encode(image).decode()}]}}
    done = httpx.post(f"{emulator.api_base}/{emulator.endpoint}/runsync", json=body,
                      headers={"Authorization": f"Bearer {emulator.api_key}"},
                      timeout=120).json()
    assert done["status"] == "COMPLETED", done
    [answer] = done["output"]
    [img] = answer["images"]
    assert img["type"] == "base64" and img["filename"].startswith("scaled")
    assert base64.b64decode(img["data"])[:8] == b"\x89PNG\r\n\x1a\n"
    bad = dict(body, input={"workflow": workflow("unknown_node"), "images": []})
    failed = httpx.post(f"{emulator.api_base}/{emulator.endpoint}/runsync", json=bad,
                        headers={"Authorization": f"Bearer {emulator.api_key}"},
                        timeout=120).json()
    assert failed["status"] == "FAILED" and "NodeThatDoesNotExist" in failed["error"]


async def test_bad_key_is_clear(emulator: RunpodEmulator) -> None:
    rp = RunpodBackend(emulator.endpoint, "not-the-key", api_base=emulator.api_base)
    with pytest.raises(Unauthorized, match="RUNPOD_API_KEY"):
        await rp.submit(JobSpec(workflow=workflow("invert")), {})
    await rp.close()


def test_cold_start_is_measured(comfy_worker: SdkWorker) -> None:
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "runpod_cold_start.json").write_text(json.dumps(
        {"seconds_to_first_job_take": round(comfy_worker.cold_start, 2),
         "what": "worker process start (handler + worker + ComfyUI) until the SDK loop "
                 "asked the control plane for its first job"}))
    assert 0 < comfy_worker.cold_start < 180


# -- through the extension: python launcher/launch.py --backend runpod ------------------


@pytest.fixture(scope="module")
def launched_runpod(comfy_install: ComfyInstall, emulator: RunpodEmulator,
                    comfy_worker: SdkWorker, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Launched]:
    handle = launch(comfy_install, tmp_path_factory.mktemp("launched-runpod"),
                    "--backend", "runpod", "--endpoint", emulator.endpoint,
                    env={"RUNPOD_API_KEY": emulator.api_key,
                         "RUNPOD_API_BASE": emulator.api_base})
    yield handle
    stop(handle)


async def test_run_button_on_runpod(launched_runpod: Launched) -> None:
    async with connected(launched_runpod.url) as client:
        for name in ("invert", "upscale_tiny"):
            prompt_id, messages = await client.run(workflow(name), timeout=120)
            kinds = [m.type for m in messages]
            assert "execution_success" in kinds, [
                m.data for m in messages if m.type.startswith(("remote_exec", "execution"))]
            if name == "upscale_tiny":
                assert "progress" in kinds
            history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
            [node] = [n for n in history["outputs"] if history["outputs"][n].get("images")]
            [image] = history["outputs"][node]["images"]
            assert (launched_runpod.local / "output" / image["filename"]).is_file()
        # Too big to travel inline: it comes through a presigned bucket URL,
        # which must not show in the local log.
        flow = workflow("invert")
        flow["5"] = {"class_type": "RemoteExecTestFile",
                     "inputs": {"name": "big.bin", "subfolder": "files", "size": 3_000_000}}
        prompt_id, messages = await client.run(flow, timeout=120)
        assert "execution_success" in [m.type for m in messages]
        assert (launched_runpod.local / "output" / "files" / "big.bin").stat().st_size \
            == 3_000_000
        status = await client.get("/remote_exec/health")
        assert status["ok"] and status["remote"]["status"] == "warm"
    # httpx's request log is off in ComfyUI; nothing else may show the presigned query.
    leaked = [line for line in launched_runpod.local_lines() if "Signature" in line]
    assert not leaked, leaked


async def test_cancel_from_the_ui_on_runpod(launched_runpod: Launched,
                                            emulator: RunpodEmulator) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=200, step_seconds=0.05, previews=False)
    flow["1"]["inputs"]["color"] = 8080
    async with connected(launched_runpod.url) as client:
        prompt_id = (await client.post(flow))["prompt_id"]

        async def on(msg: Any) -> None:
            if msg.type == "progress":
                await client.session.post(f"{client.url}/api/interrupt",
                                          json={"prompt_id": prompt_id})

        messages = await client.until_end(prompt_id, timeout=120, on=on)
        record = await client.get(f"/remote_exec/jobs/{prompt_id}")
    assert "execution_interrupted" in [m.type for m in messages]
    assert emulator.jobs[record["remote_id"]].status == "CANCELLED"


async def test_bad_key_shows_in_the_ui(comfy_install: ComfyInstall, emulator: RunpodEmulator,
                                       tmp_path: Path) -> None:
    handle = launch(comfy_install, tmp_path, "--backend", "runpod", "--endpoint",
                    emulator.endpoint, env={"RUNPOD_API_KEY": "wrong-key",
                                            "RUNPOD_API_BASE": emulator.api_base})
    try:
        async with connected(handle.url) as client:
            _, messages = await client.run(workflow("invert"))
    finally:
        stop(handle)
    toasts = [m.data for m in messages if m.type == "remote_exec.error"]
    assert toasts and "RUNPOD_API_KEY" in toasts[0]["message"]
    assert "wrong-key" not in json.dumps(toasts)


async def test_large_input_goes_up_through_the_bucket_once(backend: RunpodBackend,
                                                           emulator: RunpodEmulator,
                                                           tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.effect_noise((1800, 1500), 90).convert("RGB").save(path, format="PNG",
                                                               compress_level=0)
    assert path.stat().st_size > 6 * 1024 * 1024, "bigger than RunPod's /run allows inline"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    flow = workflow("load_scale")
    flow["1"]["inputs"]["image"] = "huge.png"
    for attempt in range(2):
        before = len(emulator.jobs)
        done = await backend.submit(JobSpec(
            workflow=flow, media=[MediaItem(name="huge.png", sha256=sha)]), {sha: path})
        assert (done.uploaded, done.reused) == (([sha], []) if attempt == 0 else ([], [sha]))
        events = [event async for event in backend.events(done.job_id)]
        assert status(events[-1]) == "completed", events[-1]
        ops = [j for j in list(emulator.jobs.values())[before:] if j.input.get("op")]
        assert len(ops) == 1
        [op] = ops
        assert (sha in op.output[0]["uploads"]) == (attempt == 0), op.output
