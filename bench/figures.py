"""The benchmark's measurements, each against its own baseline.

Every figure returns a dict with `value` (the key's number) and the raw
numbers behind it. Timed runs go through real WebSockets: from POST to the
prompt's `executing: null`, which is when a ComfyUI client sees the run end.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from PIL import Image

from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.extension.inputs import InputHasher
from comfy_remote_exec.jobapi.spawn import start_worker, stop_worker, worker_command
from comfy_remote_exec.protocol import Executed, JobSpec, MediaItem, OutputFile
from comfy_remote_exec.worker.comfy.comfy_process import ComfyProcess, ComfyProcessConfig
from tests.conftest import prepare_worker_base
from tests.extension.comfy_suite import SuiteResult, run_suite, suite_dir
from tests.extension.conftest import LocalClient, connected, local_comfy
from tests.helpers import workflow

from .harness import CountingTransport, Foreign, HttpStack, RssSampler, rss_mb


def stats(values: list[float], digits: int = 4) -> dict[str, float]:
    """min, median, p95, max, rounded for the record (seconds: to 0.1 ms). Figures
    that subtract or divide medians use `statistics.median` of the raw values: the
    rounding of each would add up to its unit of error."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = round(statistics.median(ordered), digits)
    return {"min": round(ordered[0], digits), "median": median, "p50": median,
            "p95": round(p95, digits), "max": round(ordered[-1], digits), "n": len(ordered)}


class Counter:
    """Fresh values so ComfyUI's cache never answers for a run."""

    def __init__(self) -> None:
        self.n = int(time.time()) % 100000

    def __call__(self) -> int:
        self.n += 1
        return self.n


async def timed_run(client: LocalClient, flow: dict[str, Any]) -> float:
    began = time.perf_counter()
    _, messages = await client.run(flow, timeout=300)
    elapsed = time.perf_counter() - began
    if not any(m.type == "execution_success" for m in messages):
        raise RuntimeError(f"benchmark run failed: {[m.data for m in messages][-3:]}")
    return elapsed


async def overhead(stack: HttpStack, runs: int, make: Callable[[int], dict[str, Any]]
                   ) -> dict[str, Any]:
    """Extension (local backend) against a direct POST to the worker's ComfyUI, in pairs
    whose order alternates (a run after the other kind, as often as before it), with
    the 90 % interval of `added_ms` and `ratio` over the pairs."""
    fresh = Counter()
    async with aiohttp.ClientSession() as session:
        direct = LocalClient(stack.comfy_url, session, remote=False)
        remote = LocalClient(stack.local.url, session)
        await direct.connect()
        await remote.connect()
        await timed_run(direct, make(fresh()))  # warm both paths (model load, imports)
        await timed_run(remote, make(fresh()))
        times: dict[str, list[float]] = {"direct": [], "extension": []}
        for i in range(runs):
            order = ("direct", "extension") if i % 2 == 0 else ("extension", "direct")
            for kind in order:
                client = direct if kind == "direct" else remote
                times[kind].append(await timed_run(client, make(fresh())))
        await direct.close()
        await remote.close()
    direct_m = statistics.median(times["direct"])
    ext_m = statistics.median(times["extension"])
    added = interval(times["direct"], times["extension"],
                     lambda d, e: 1000 * (statistics.median(e) - statistics.median(d)))
    ratio = interval(times["direct"], times["extension"],
                     lambda d, e: statistics.median(e) / statistics.median(d))
    return {"direct_s": stats(times["direct"]), "extension_s": stats(times["extension"]),
            "added_ms": round(1000 * (ext_m - direct_m), 1),
            "added_ms_90": [round(v, 1) for v in added],
            "ratio": round(ext_m / direct_m, 3), "ratio_90": [round(v, 3) for v in ratio]}


def interval(direct: list[float], extension: list[float],
             figure: Callable[[list[float], list[float]], float],
             level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """The `level` interval of `figure` (of the two series' medians) by a bootstrap over
    the pairs: how far another run of the same pairs could land on this machine. A
    target inside it is met or missed by chance, whatever the one value says."""
    rng = random.Random(0)
    pairs = list(zip(direct, extension, strict=True))
    values = sorted(figure(*map(list, zip(*(rng.choice(pairs) for _ in pairs), strict=True)))
                    for _ in range(resamples))
    tail = round((1 - level) / 2 * (resamples - 1))
    return values[tail], values[-1 - tail]


def tiny_flow(color: int) -> dict[str, Any]:
    flow = workflow("invert")
    flow["1"]["inputs"]["color"] = color
    return flow


def upscale_flow(color: int, size: int = 1448) -> dict[str, Any]:
    """The tiny upscaler on `size`²: at 1448², 0.72 s on this 2-core machine when its
    target was set (November 2026), 0.49-0.55 s in December."""
    flow = workflow("upscale_tiny")
    flow["1"]["inputs"].update(width=size, height=size, color=color)
    return flow


async def relay_latency(url: str, ticks: int) -> dict[str, Any]:
    """Remote ComfyUI progress sends (stamped by the node) to local WebSocket arrival.

    The ticks come 100 ms apart: the most often ComfyUI 0.26 sends a bar's updates,
    and the worker's ComfyUI of any version (its hook, `comfyui_nodes/`), so every
    tick is sent and measured."""
    flow = {"1": {"class_type": "RemoteExecBenchTicks",
                  "inputs": {"ticks": ticks, "interval": 0.1, "seed": Counter()()}}}
    arrivals: dict[int, float] = {}
    async with connected(url) as client:
        prompt_id = (await client.post(flow))["prompt_id"]

        async def on(msg: Any) -> None:
            if msg.type == "progress" and msg.data.get("prompt_id") == prompt_id:
                arrivals.setdefault(int(msg.data["value"]), time.time())

        messages = await client.until_end(prompt_id, timeout=300, on=on)
    [executed] = [m.data for m in messages if m.type == "executed"]
    sent = json.loads(executed["output"]["text"][0])
    latencies = [1000 * (arrivals[i + 1] - t) for i, t in enumerate(sent) if i + 1 in arrivals]
    return {"ms": stats(latencies, 3), "delivered": len(latencies), "sent": len(sent)}


async def output_wire_ratio(stack: HttpStack, size: int) -> dict[str, Any]:
    """Bytes on the wire for outputs (descriptor event + download) over the file bytes."""
    transport = CountingTransport()
    flow = {"1": {"class_type": "RemoteExecTestFile",
                  "inputs": {"name": f"wire-{Counter()()}.bin", "subfolder": "bench",
                             "size": size}}}
    async with httpx.AsyncClient(transport=transport) as client:
        backend = HttpBackend(stack.worker_url, stack.token, client)
        job_id = (await backend.submit(JobSpec(workflow=flow), {})).job_id
        files: list[OutputFile] = []
        async for event in backend.events(job_id):
            if isinstance(event.payload, Executed):
                files = event.payload.files
                descriptor = len(json.dumps(event.to_wire()))
        before = transport.received
        size = 0
        for out in files:
            buf = io.BytesIO()
            await backend.download(job_id, out, buf)
            size += len(buf.getvalue())
        wire = transport.received - before + descriptor
    return {"value": round(wire / size, 5), "file_bytes": size, "wire_bytes": wire}


async def repeat_input_bytes(stack: HttpStack, root: Path) -> dict[str, Any]:
    """Request bytes the extension's backend sends to resubmit a job with a 20 MB input."""
    input_dir = root / "bench-input"
    input_dir.mkdir(exist_ok=True)
    image = Image.effect_noise((2600, 2600), 80).convert("RGB")
    image.save(input_dir / "big.png", format="PNG", compress_level=0)
    size = (input_dir / "big.png").stat().st_size
    flow = workflow("load_scale")
    flow["1"]["inputs"]["image"] = "big.png"
    hasher = InputHasher()
    sent = []
    for _ in range(2):
        transport = CountingTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            backend = HttpBackend(stack.worker_url, stack.token, client)
            files = hasher.collect(flow, {"input": input_dir})
            submitted = await backend.submit(JobSpec(workflow=flow, media=[
                MediaItem(name=f.name, sha256=f.sha256) for f in files]),
                {f.sha256: f.path for f in files})
            # Streamed bodies are not counted by the transport.
            transport.sent += sum(f.size for f in files if f.sha256 in submitted.uploaded)
        sent.append(transport.sent)
    return {"value": sent[1], "first_submission_bytes": sent[0], "input_bytes": size}


async def cold_start(install: ComfyInstall, root: Path, runs: int) -> dict[str, Any]:
    """Worker start to ready, over a bare ComfyUI start to healthy."""
    bare, worker = [], []
    for i in range(runs):
        base = root / f"cold-bare-{i}"
        (base / "custom_nodes").mkdir(parents=True)
        proc = ComfyProcess(ComfyProcessConfig(install=install, base_dir=base,
                                               extra_args=["--cpu"], restart=False))
        began = time.monotonic()
        await proc.start()
        bare.append(time.monotonic() - began)
        await proc.stop()
        wbase = root / f"cold-worker-{i}"
        prepare_worker_base(wbase)
        cmd = worker_command(python=sys.executable, comfyui=install.root,
                             comfy_python=install.python, base_dir=wbase, comfy_args=["--cpu"])
        began = time.monotonic()
        wproc, _ = await asyncio.to_thread(start_worker, cmd)
        worker.append(time.monotonic() - began)
        await asyncio.to_thread(stop_worker, wproc)
    b, w = stats(bare), stats(worker)
    return {"value": round(w["median"] / b["median"], 3), "bare_comfyui_s": b, "worker_s": w}


async def rss_added(install: ComfyInstall, root: Path, stack: HttpStack) -> dict[str, Any]:
    """RSS of the local ComfyUI with the extension, after its remote runs, over the same
    ComfyUI without the extension, started and idle (neither executed a node itself)."""
    bare = local_comfy(install, root / "rss-bare", {}, extension=False)
    await bare.start()
    assert bare.pid is not None and stack.local.pid is not None
    without, with_ext = rss_mb(bare.pid), rss_mb(stack.local.pid)
    await bare.stop()
    return {"value": round(with_ext - without, 1), "with_mb": round(with_ext, 1),
            "without_mb": round(without, 1)}


async def relay_big_output(stack: HttpStack, size: int) -> dict[str, Any]:
    """Extra peak RSS of the local ComfyUI while a large output is relayed into output/."""
    flow = {"1": {"class_type": "RemoteExecTestFile",
                  "inputs": {"name": f"big-{Counter()()}.bin", "subfolder": "bench",
                             "size": size}}}
    assert stack.local.pid is not None
    async with connected(stack.local.url) as client:
        baseline = rss_mb(stack.local.pid)
        with RssSampler(stack.local.pid) as sampler:
            await timed_run(client, flow)
    landed = stack.local.config.base_dir / "output" / "bench" / flow["1"]["inputs"]["name"]
    digest = hashlib.sha256(landed.read_bytes()).hexdigest()
    remote = stack.worker_base / "output" / "bench" / flow["1"]["inputs"]["name"]
    assert digest == hashlib.sha256(remote.read_bytes()).hexdigest()
    return {"value": round(max(0.0, sampler.peak - baseline), 1), "baseline_mb": baseline,
            "peak_mb": sampler.peak, "output_bytes": size}


async def parallel_speedup(url: str, jobs: int, step_seconds: float) -> dict[str, Any]:
    """N sleep-bound jobs with ParallelJobs=1, then =4, through the runpod backend."""
    walls = {}
    async with connected(url) as client:
        fresh = Counter()
        for parallel in (1, 4):
            async with client.session.post(f"{url}/api/settings/RemoteExec.ParallelJobs",
                                           json=parallel) as resp:
                assert resp.status == 200
            ids = []
            began = time.perf_counter()
            for _ in range(jobs):
                flow = workflow("steps")
                flow["2"]["inputs"].update(steps=10, step_seconds=step_seconds, previews=False)
                flow["1"]["inputs"]["color"] = fresh()
                ids.append((await client.post(flow))["prompt_id"])
            pending = set(ids)

            async def drain(pending: set[str] = pending) -> None:
                while pending:
                    msg = await client.messages.get()
                    if msg.type == "executing" and msg.data.get("node") is None:
                        pending.discard(msg.data.get("prompt_id"))

            await asyncio.wait_for(drain(), 600)
            walls[parallel] = time.perf_counter() - began
    return {"value": round(walls[1] / walls[4], 2), "serial_s": round(walls[1], 2),
            "parallel_s": round(walls[4], 2), "jobs": jobs,
            "job_seconds": 10 * step_seconds}


async def suite_wall_ratio(install: ComfyInstall, root: Path, select: str = ""
                           ) -> dict[str, Any]:
    """ComfyUI's own `tests/execution` suite, unmodified, through the extension in remote
    mode over the same suite run directly: the ratio of their wall times.

    Both runs come from the tests' own harness (`tests/extension/comfy_suite.run_suite`:
    in remote mode every server the suite starts loads the extension on the `local`
    backend, which starts a worker with its own ComfyUI). The wall time is pytest's
    own, its JUnit suite time (collection, server starts and every test). `select`, a
    pytest `-k` expression, runs part of the suite (smaller configurations); it reaches
    the suite's pytest as PYTEST_ADDOPTS, the one way in that leaves the harness alone.
    """
    if not suite_dir(install).is_dir():
        raise RuntimeError(f"{install.root} has no tests/execution: no suite_wall_ratio")
    saved = os.environ.get("PYTEST_ADDOPTS")
    if select:
        os.environ["PYTEST_ADDOPTS"] = f"{saved or ''} -k '{select}'".strip()
    foreign = {}
    try:
        window = Foreign()
        direct = await asyncio.to_thread(run_suite, install, root / "suite-direct", False)
        foreign["direct"] = round(window.share(), 2)
        window = Foreign()
        remote = await asyncio.to_thread(run_suite, install, root / "suite-remote", True)
        foreign["remote"] = round(window.share(), 2)
    finally:
        if saved is None:
            os.environ.pop("PYTEST_ADDOPTS", None)
        else:
            os.environ["PYTEST_ADDOPTS"] = saved

    def summary(result: SuiteResult) -> dict[str, Any]:
        return {"seconds": round(result.seconds, 1), "tests": len(result.outcomes),
                "passed": len(result.passed)}

    if not direct.outcomes:
        raise RuntimeError(f"ComfyUI's suite ran no test directly:\n{direct.output[-3000:]}")
    lost = sorted(direct.passed - remote.passed)
    return {"value": round(remote.seconds / direct.seconds, 3), "direct": summary(direct),
            "remote": summary(remote), "select": select or "all",
            "lost_remotely": len(lost), "lost_examples": lost[:5],
            # CPU (in cores) that processes outside this benchmark used meanwhile: other
            # work on the machine skews the ratio.
            "foreign_cpu_cores": foreign}
