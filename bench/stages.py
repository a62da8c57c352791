#!/usr/bin/env python3
"""Where a remote run's time goes: one timeline per run, across the three processes.

    python bench/stages.py [--runs N] [--flow tiny|upscale] [--out DIR] [--no-trace]
                           [--whatif NAME[,NAME]] [--spy RUNS]
    python bench/stages.py --relay http|runpod [--ticks N] [--no-trace] [--whatif ...]
    python bench/stages.py --sweep "base;NAME;NAME,NAME" [--repeat R] [--relay ...]

Starts the benchmark's `HttpStack` (a worker with its ComfyUI, and a local
ComfyUI with the extension on the `local` backend) with `bench/tracehook` as
`sitecustomize` in every process, so each traced call of ComfyUI and of
comfy_remote_exec appends a line to one trace file (see that module). Then it
runs the flow N times directly on the worker's ComfyUI and N times through the
extension, interleaved, as `figures.overhead` does, and marks the client's own
steps (POST sent, answer, every WebSocket message, end) in the same file. Each
measuring phase first waits until other processes leave the machine quiet, and is
redone (up to three times) when they did not; the least disturbed one is analysed.

Output (in `--out`, default a temporary folder, printed):
- `trace.log`: the raw trace;
- `timeline-extension.md`, `timeline-direct.md`: every traced point that
  appears in most runs, as the median time since the client's POST (ms), in
  order, with the median gap to the previous point;
- `path-extension.md`, `path-direct.md`: the run's critical path, step by step
  (median gap between consecutive points, see PATH_POINTS);
- `spans-*.md`: the median and total duration of every traced call, per process;
- `cpu.json`: CPU time per run of each process (its threads' scheduler time),
  over N direct runs in a row and then N extension runs in a row;
- `result.json`: the timed runs' medians and the foreign CPU meanwhile;
- with `--spy RUNS`: `local.txt`, `worker.txt`, `comfy.txt`, py-spy's collapsed
  stacks over RUNS extension runs;
- with `--relay`: `relay-<backend>.md`, each hop of a progress event (see
  RELAY_POINTS), or `relay-<backend>.json` untraced;
- with `--sweep`: `sweep.md`, the what-if configurations side by side.

`--whatif` applies the experiments of `bench/tracehook/remote_exec_whatif.py`.
Product code is not changed; the wrappers add a few microseconds per traced call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench import figures  # noqa: E402
from bench.harness import Foreign, HttpStack, RunpodStack  # noqa: E402
from comfy_remote_exec.discovery import find_comfyui  # noqa: E402
from tests.extension.conftest import LocalClient, Message  # noqa: E402
from tests.runpod_emulator import RunpodEmulator  # noqa: E402

HOOK = REPO / "bench" / "tracehook"


class Tracer:
    """The client's marks, in the trace file's format (role `client`)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def mark(self, event: str, detail: str = "") -> None:
        line = f"{time.monotonic_ns()} client {os.getpid()} {event} {detail}".rstrip() + "\n"
        os.write(self.fd, line.encode())


def describe(kind: str, data: Any) -> str:
    """As the hook's `desc`: `type node`, and `value` for progress."""
    if not isinstance(data, dict):
        return kind
    if kind == "progress":
        return f"{kind} {data.get('node')} {data.get('value')}"
    return f"{kind} {data.get('node')}"


class TracedClient(LocalClient):
    """A `LocalClient` that marks each WebSocket message as it arrives."""

    def __init__(self, tracer: Tracer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracer = tracer

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.tracer.mark("ws_msg", "binary")
                await self.messages.put(Message("binary", None, msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.tracer.mark("ws_msg", describe(data["type"], data.get("data")))
                await self.messages.put(Message(data["type"], data.get("data")))


async def traced_run(tracer: Tracer, client: TracedClient, mode: str, i: int,
                     flow: dict[str, Any]) -> float:
    """`figures.timed_run`, with marks at its start, its POST's answer and its end."""
    tracer.mark("run>", f"{mode} {i}")
    began = time.perf_counter()
    prompt_id = (await client.post(flow))["prompt_id"]
    tracer.mark("posted", mode)
    messages = await client.until_end(prompt_id, timeout=300)
    elapsed = time.perf_counter() - began
    tracer.mark("run<", f"{mode} {i}")
    if not any(m.type == "execution_success" for m in messages):
        raise RuntimeError(f"run failed: {[m.data for m in messages][-3:]}")
    return elapsed


FOREIGN_LIMIT = 0.15  # of one core: above it, a phase is measured again


async def wait_quiet(limit: float = 0.1, seconds: float = 3.0, give_up: float = 900) -> float:
    """Wait until processes outside this benchmark use less than `limit` of one core for
    `seconds` in a row (other work on this 2-core machine skews every figure)."""
    deadline = time.monotonic() + give_up
    quiet_since = None
    while time.monotonic() < deadline:
        window = Foreign()
        await asyncio.sleep(1.0)
        share = window.share()
        if share < limit:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= seconds:
                return share
        else:
            quiet_since = None
    print(f"[stages] the machine did not get quiet within {give_up:.0f} s", file=sys.stderr)
    return -1.0


def cpu_ns(pid: int) -> dict[int, int]:
    """CPU time (ns, from the scheduler's own accounting) of each thread of `pid`."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
    return out


def comfy_child(worker_pid: int) -> int:
    """The worker's ComfyUI: the child process of the worker."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == worker_pid:
                    return int(proc.name)
            except (OSError, ValueError, IndexError):
                continue
    raise RuntimeError("the worker has no ComfyUI child")


class CpuMeter:
    """CPU time each process spent (all its threads), between `start` and `stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, dict[int, int]] = {}

    def start(self) -> None:
        self.before = {name: cpu_ns(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, pid in self.pids.items():
            now = cpu_ns(pid)
            used = {tid: ns - self.before[name].get(tid, 0) for tid, ns in now.items()}
            busy = sorted((v for v in used.values() if v > 0), reverse=True)
            out[name] = {"total_ms": sum(busy) / 1e6, "threads_ms": [v / 1e6 for v in busy[:4]]}
        return out


async def cpu_phase(stack: HttpStack, tracer: Tracer, make: Any, runs: int,
                    direct: TracedClient, remote: TracedClient) -> dict[str, Any]:
    """CPU per run of each process: `runs` direct runs in a row, then `runs` extension runs."""
    assert stack.local.pid is not None
    meter = CpuMeter({"local ComfyUI (extension)": stack.local.pid,
                      "worker": stack.worker.pid,
                      "worker's ComfyUI": comfy_child(stack.worker.pid),
                      "bench client": os.getpid()})
    fresh = figures.Counter()
    result: dict[str, Any] = {}
    for mode, client in (("direct", direct), ("extension", remote)):
        meter.start()
        began = time.perf_counter()
        for i in range(runs):
            await traced_run(tracer, client, f"cpu-{mode}", i, make(fresh()))
        wall = time.perf_counter() - began
        used = meter.stop()
        result[mode] = {"wall_ms_per_run": 1000 * wall / runs,
                        **{name: {"ms_per_run": round(v["total_ms"] / runs, 3),
                                  "top_threads_ms_per_run": [round(t / runs, 3)
                                                             for t in v["threads_ms"]]}
                           for name, v in used.items()}}
    return result


async def spy_phase(stack: HttpStack, tracer: Tracer, make: Any, runs: int,
                    remote: TracedClient, out: Path) -> None:
    """py-spy on the three processes over `runs` extension runs in a row: `<process>.txt`,
    py-spy's collapsed stacks. `--gil`: only the thread holding the GIL is sampled, so
    waits that release it (epoll, fsync, socket reads) are left out: what remains is
    Python's own CPU work. `--nonblocking`: the process is never paused."""
    assert stack.local.pid is not None
    pids = {"local": stack.local.pid, "worker": stack.worker.pid,
            "comfy": comfy_child(stack.worker.pid)}
    spy = Path(sys.executable).parent / "py-spy"
    procs = [subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "1000",
                               "--nonblocking", "--gil", "--threads", "--format", "raw",
                               "--output",
                               str(out / f"{name}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, pid in pids.items()]
    await asyncio.sleep(1.0)  # py-spy attaches
    fresh = figures.Counter()
    for i in range(runs):
        await traced_run(tracer, remote, "spy-extension", i, make(fresh()))
    for proc in procs:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc in procs:
        proc.wait(60)


async def measure(root: Path, trace: Path | None, runs: int, flow_name: str,
                  spy: Path | None = None, spy_runs: int = 200
                  ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    if trace is not None:
        os.environ["BENCH_TRACE"] = str(trace)
    else:
        trace = root / "client-marks.log"
    make = figures.upscale_flow if flow_name == "upscale" else figures.tiny_flow
    tracer = Tracer(trace)
    stack = await HttpStack.start(find_comfyui(), root)
    times: dict[str, list[float]] = {"direct": [], "extension": []}
    try:
        fresh = figures.Counter()
        async with aiohttp.ClientSession() as session:
            direct = TracedClient(tracer, stack.comfy_url, session, remote=False)
            remote = TracedClient(tracer, stack.local.url, session)
            await direct.connect()
            await remote.connect()
            await traced_run(tracer, direct, "warm-direct", 0, make(fresh()))
            await traced_run(tracer, remote, "warm-extension", 0, make(fresh()))
            attempts: list[tuple[float, int, dict[str, list[float]]]] = []
            for attempt in range(3):  # again if other work shared the machine
                await wait_quiet()
                window = Foreign()
                times = {"direct": [], "extension": []}
                for i in range(runs):
                    for mode, client in (("direct", direct), ("extension", remote)):
                        times[mode].append(await traced_run(
                            tracer, client, f"{mode}-a{attempt}", i, make(fresh())))
                attempts.append((window.share(), attempt, times))
                if attempts[-1][0] < FOREIGN_LIMIT:
                    break
            share, best, times = min(attempts, key=lambda a: a[0])
            await wait_quiet()
            window = Foreign()
            cpu = await cpu_phase(stack, tracer, make, runs, direct, remote)
            cpu["foreign_share"] = {"timed_runs": round(share, 3),
                                    "cpu_phase": round(window.share(), 3), "attempt": best,
                                    "attempts": [round(a[0], 3) for a in attempts]}
            if spy is not None:
                await spy_phase(stack, tracer, make, spy_runs, remote, spy)
            await direct.close()
            await remote.close()
    finally:
        await stack.stop()
    return times, cpu


def trace_emulator(tracer: Tracer) -> None:
    """Marks in the RunPod emulator (it runs in this process): a chunk the SDK posts
    (`emu_chunk`) and the chunks a `/stream` poll takes away (`emu_poll`)."""
    def events(items: list[Any]) -> str:
        return " ".join(describe(e.get("type"), e.get("data")).replace(" ", ":")
                        for item in items for e in ((item or {}).get("events") or []))[:300]

    job_stream, stream = RunpodEmulator.job_stream, RunpodEmulator.stream

    async def traced_job_stream(self: Any, request: Any) -> Any:
        answer = await job_stream(self, request)
        body = json.loads(await request.text())
        tracer.mark("emu_chunk", events([body.get("output")]))
        return answer

    async def traced_stream(self: Any, request: Any) -> Any:
        answer = await stream(self, request)
        items = json.loads(answer.text).get("stream") or []
        tracer.mark("emu_poll", events([i.get("output") for i in items]) or "empty")
        return answer

    RunpodEmulator.job_stream = traced_job_stream  # type: ignore[method-assign]
    RunpodEmulator.stream = traced_stream  # type: ignore[method-assign]


async def relay_measure(root: Path, trace: Path | None, kind: str, ticks: int,
                        workers: int) -> dict[str, Any]:
    """`figures.relay_latency` on the http or the RunPod stack, traced unless `trace` is
    None."""
    if trace is not None:
        os.environ["BENCH_TRACE"] = str(trace)
    else:
        trace = root / "client-marks.log"
    tracer = Tracer(trace)
    install = find_comfyui()
    stack: HttpStack | RunpodStack
    if kind == "runpod":
        trace_emulator(tracer)
        stack = await RunpodStack.start(install, root, workers)
    else:
        stack = await HttpStack.start(install, root)

    remote = True

    @contextlib.asynccontextmanager
    async def connected(url: str) -> AsyncIterator[TracedClient]:
        """The figure's client, marking its messages."""
        async with aiohttp.ClientSession() as session:
            client = TracedClient(tracer, url, session, remote=remote)
            await client.connect()
            try:
                yield client
            finally:
                await client.close()

    figures.connected = connected  # type: ignore[assignment]
    try:
        await figures.relay_latency(stack.local.url, 5)  # warm the path
        await wait_quiet()
        window = Foreign()
        tracer.mark("run>", "relay 0")
        result = await figures.relay_latency(stack.local.url, ticks)
        tracer.mark("run<", "relay 0")
        result["foreign_share"] = round(window.share(), 3)
        if isinstance(stack, HttpStack):
            # The same figure straight on the worker's ComfyUI: ComfyUI's own share.
            remote = False
            await wait_quiet()
            window = Foreign()
            direct = await figures.relay_latency(stack.comfy_url, ticks)
            result["direct_ms"] = direct["ms"]
            result["direct_foreign_share"] = round(window.share(), 3)
    finally:
        await stack.stop()
    return result


# Points a progress event passes, in order; matched by the event's node and value.
RELAY_POINTS = {
    "http": [
        ("ComfyUI progress hook calls send_sync", "comfy", "send_sync>"),
        ("ComfyUI's loop writes it to the worker's WebSocket", "comfy", "ws_send>"),
        ("worker reads and translates it", "worker", "ws_in"),
        ("worker's job record takes it", "worker", "job_event>"),
        ("worker's SSE handler takes it", "worker", "stream_yield"),
        ("extension parses the SSE event", "local", "sse_event"),
        ("extension's handler takes it", "local", "handle>"),
        ("extension calls send_sync", "local", "send_sync>"),
        ("local ComfyUI's loop writes it to the client", "local", "ws_send>"),
        ("client reads it", "client", "ws_msg"),
    ],
    "runpod": [
        ("ComfyUI progress hook calls send_sync", "comfy", "send_sync>"),
        ("ComfyUI's loop writes it to the worker's WebSocket", "comfy", "ws_send>"),
        ("worker reads and translates it", "worker", "ws_in"),
        ("worker's SSE handler takes it", "worker", "stream_yield"),
        ("handler's HttpBackend parses the SSE event", "handler", "sse_event"),
        ("SDK begins POST job-stream with the chunk", "handler", "sdk_stream>"),
        ("emulator stores the chunk", "client", "emu_chunk"),
        ("a /stream poll takes the chunk", "client", "emu_poll"),
        ("extension's RunpodBackend yields it", "local", "sse_event"),
        ("extension calls send_sync", "local", "send_sync>"),
        ("local ComfyUI's loop writes it to the client", "local", "ws_send>"),
        ("client reads it", "client", "ws_msg"),
    ],
}


def carries(detail: str, node: str, value: int) -> bool:
    """Whether a trace detail names progress `value` of `node` (alone or in a chunk)."""
    words = detail.split()
    if words[:3] == ["progress", node, str(value)]:
        return True
    return f"progress:{node}:{value}" in words


def relay_hops(lines: list[Line], kind: str) -> tuple[list[tuple[str, str, dict[str, float]]],
                                                       dict[str, float]]:
    """Per hop of RELAY_POINTS: median and p95 ms over the run's progress events; and the
    end-to-end numbers from the first point to the last."""
    [(_start, _end, run)] = windows(lines, "relay")
    values = sorted({int(d.split()[2]) for _ns, r, _p, e, d in run
                     if r == "comfy" and e == "send_sync>" and d.startswith("progress ")})
    node = next(d.split()[1] for _ns, r, _p, e, d in run
                if r == "comfy" and e == "send_sync>" and d.startswith("progress "))
    points = RELAY_POINTS[kind]
    found: dict[int, list[int | None]] = {}
    for value in values:
        stamps: list[int | None] = []
        for _label, role, event in points:
            stamps.append(next((ns for ns, r, _p, e, d in run
                                if r == role and e == event and carries(d, node, value)), None))
        found[value] = stamps
    hops = []
    for k in range(1, len(points)):
        gaps = [(st[k] - st[k - 1]) / 1e6 for st in found.values()
                if st[k] is not None and st[k - 1] is not None]
        if gaps:
            hops.append((points[k][0], f"{points[k][1]} {points[k][2]}", stats_of(gaps)))
    ends = [(st[-1] - st[0]) / 1e6 for st in found.values()
            if st[0] is not None and st[-1] is not None]
    return hops, stats_of(ends)


def stats_of(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "n": len(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def relay_md(kind: str, hops: list[tuple[str, str, dict[str, float]]],
             total: dict[str, float], figure: dict[str, Any]) -> str:
    text = [f"# Relay of progress events, {kind} backend", "",
            f"The figure's own numbers (node stamp to client WebSocket): "
            f"`{json.dumps(figure['ms'])}`."
            + (f" The same figure run directly on the worker's ComfyUI (no relay): "
               f"`{json.dumps(figure['direct_ms'])}`." if "direct_ms" in figure else ""), "",
            "| hop (to this point) | trace point | median ms | p95 ms | events |",
            "|---|---|---:|---:|---:|"]
    for label, point, st in hops:
        text.append(f"| {label} | `{point}` | {st['median']:.3f} | {st['p95']:.3f} | "
                    f"{st['n']} |")
    text.append(f"| **first point to client** | | **{total['median']:.3f}** | "
                f"**{total['p95']:.3f}** | {total['n']} |")
    return "\n".join(text) + "\n"


def use_hook(whatif: str) -> None:
    """Put the hook on the path of every process started from now on (`sitecustomize`;
    it does nothing without BENCH_TRACE or BENCH_WHATIF)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HOOK), os.environ.get("PYTHONPATH", "")) if p)
    if whatif:
        os.environ["BENCH_WHATIF"] = whatif


# -- analysis ---------------------------------------------------------------------------

Line = tuple[int, str, int, str, str]  # ns, role, pid, event, detail


def read_trace(path: Path) -> list[Line]:
    lines = []
    for raw in path.read_text().splitlines():
        parts = raw.split(" ", 4)
        if len(parts) < 4:
            continue
        lines.append((int(parts[0]), parts[1], int(parts[2]), parts[3],
                      parts[4] if len(parts) > 4 else ""))
    lines.sort(key=lambda x: x[0])
    return lines


def windows(lines: list[Line], mode: str) -> list[tuple[int, int, list[Line]]]:
    """Per run of `mode`: its start, its end and the lines from its start to the next run's
    start (so work that finishes after the client saw the end is kept)."""
    starts = [(i, ln) for i, ln in enumerate(lines) if ln[1] == "client" and ln[3] == "run>"]
    out = []
    for k, (i, ln) in enumerate(starts):
        if ln[4].split()[0] != mode:
            continue
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        end = next(x[0] for x in lines[i:stop] if x[1] == "client" and x[3] == "run<")
        out.append((ln[0], end, lines[i:stop]))
    return out


def timeline(runs: list[tuple[int, int, list[Line]]]) -> list[tuple[str, float, float, int]]:
    """(point, median ms since the run's start, median ms since the run's end, runs seen)
    for every point seen in at least half the runs; a point is role, event and detail,
    with its occurrence number within the run."""
    seen: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for start, end, lines in runs:
        count: dict[str, int] = defaultdict(int)
        for ns, role, _pid, event, detail in lines:
            key = f"{role} {event} {detail}".strip()
            count[key] += 1
            name = key if count[key] == 1 else f"{key} #{count[key]}"
            seen[name].append(((ns - start) / 1e6, (ns - end) / 1e6))
    rows = [(name, statistics.median(v[0] for v in vals),
             statistics.median(v[1] for v in vals), len(vals))
            for name, vals in seen.items() if len(vals) >= max(1, len(runs) // 2)]
    rows.sort(key=lambda r: r[1])
    return rows


def spans(runs: list[tuple[int, int, list[Line]]]) -> dict[tuple[str, str], list[float]]:
    """Durations (ms) of every `x>` ... `x<` pair, per (role, x), over all runs."""
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _start, _end, lines in runs:
        open_: dict[tuple[int, str], list[int]] = defaultdict(list)
        for ns, role, pid, event, _detail in lines:
            if event.endswith(">"):
                open_[(pid, event[:-1])].append(ns)
            elif event.endswith("<") and open_[(pid, event[:-1])]:
                began = open_[(pid, event[:-1])].pop()
                out[(role, event[:-1])].append((ns - began) / 1e6)
    return out


# The critical path of one run, as (label, role, event, detail prefix): each point is the
# first line matching it after the previous point. Direct runs skip the points of
# processes they do not use.
PATH_POINTS = [
    ("client POSTs the prompt", "client", "run>", ""),
    ("local ComfyUI gets the POST", "local", "http>", "POST /api/prompt"),
    ("extension: validated, journal write begins", "local", "journal_save>", "pending"),
    ("journal written (fsync)", "local", "journal_save<", ""),
    ("POST answered", "local", "http<", "POST /api/prompt"),
    ("job task starts", "local", "jobrun>", ""),
    ("inputs hashed (thread), POST /v1/jobs begins", "local", "post_job>", ""),
    ("worker gets POST /v1/jobs", "worker", "http>", "POST /v1/jobs"),
    ("job record written (fsync)", "worker", "runner_submit>", ""),
    ("health probe GET /queue done", "worker", "ensure_healthy<", ""),
    ("worker POSTs to its ComfyUI", "worker", "queue_prompt>", ""),
    ("ComfyUI gets POST /prompt", "comfy", "http>", "POST /"),
    ("ComfyUI starts executing", "comfy", "execute>", ""),
    ("SaveImage done", "comfy", "save_images<", ""),
    ("ComfyUI sends executed", "comfy", "send_sync>", "executed"),
    ("worker gets executed", "worker", "ws_in", "executed"),
    ("worker hashed the output (thread)", "worker", "describe<", ""),
    ("worker streams executed (SSE)", "worker", "stream_yield", "executed"),
    ("extension gets executed", "local", "sse_event", "executed"),
    ("download begins", "local", "download>", ""),
    ("download done (GET, thread writes)", "local", "download<", ""),
    ("file placed (link, name scan)", "local", "place<", ""),
    ("journal written (fsync)", "local", "land_all<", ""),
    ("extension sends executed", "local", "send_sync>", "executed"),
    ("extension gets executing None", "local", "sse_event", "executing"),
    ("extension sends executing None", "local", "send_sync>", "executing None"),
    ("ComfyUI sends executing None", "comfy", "send_sync>", "executing None"),
    ("client gets executing None", "client", "run<", ""),
]


def critical_path(runs: list[tuple[int, int, list[Line]]]) -> list[tuple[str, str, float, int]]:
    """(label, point, median ms from the previous point found, runs) along PATH_POINTS."""
    gaps: dict[int, list[float]] = defaultdict(list)
    for _start, _end, lines in runs:
        pos, prev_ns = 0, None
        for k, (_label, role, event, prefix) in enumerate(PATH_POINTS):
            for j in range(pos, len(lines)):
                ns, r, _pid, e, d = lines[j]
                if r == role and e == event and d.startswith(prefix):
                    if prev_ns is not None:
                        gaps[k].append((ns - prev_ns) / 1e6)
                    prev_ns, pos = ns, j + 1
                    break
    return [(label, f"{role} {event} {prefix}".strip(), statistics.median(gaps[k]), len(gaps[k]))
            for k, (label, role, event, prefix) in enumerate(PATH_POINTS) if gaps.get(k)]


def critical_md(rows: list[tuple[str, str, float, int]], title: str) -> str:
    text = [f"# {title}", "", "| step | trace point | median ms since previous | runs |",
            "|---|---|---:|---:|"]
    for label, point, ms, n in rows:
        text.append(f"| {label} | `{point}` | {ms:.2f} | {n} |")
    text.append(f"| **sum of medians** | | **{sum(r[2] for r in rows):.2f}** | |")
    return "\n".join(text) + "\n"


def timeline_md(rows: list[tuple[str, float, float, int]], title: str) -> str:
    text = [f"# {title}", "", "| ms since POST | gap | ms to end | runs | point |",
            "|---:|---:|---:|---:|---|"]
    prev = 0.0
    for name, at, to_end, n in rows:
        text.append(f"| {at:.2f} | {at - prev:+.2f} | {to_end:.2f} | {n} | `{name}` |")
        prev = at
    return "\n".join(text) + "\n"


def spans_md(found: dict[tuple[str, str], list[float]], runs: int, title: str) -> str:
    text = [f"# {title}", "", "| process | call | n/run | median ms | total ms/run |",
            "|---|---|---:|---:|---:|"]
    rows = sorted(found.items(), key=lambda kv: -sum(kv[1]))
    for (role, name), vals in rows:
        text.append(f"| {role} | `{name}` | {len(vals) / runs:.1f} | "
                    f"{statistics.median(vals):.3f} | {sum(vals) / runs:.3f} |")
    return "\n".join(text) + "\n"


def analyse(trace: Path, out: Path, times: dict[str, list[float]], attempt: int = 0) -> str:
    """The tables of the timed runs of `attempt` (the one least disturbed)."""
    lines = read_trace(trace)
    summary = []
    for mode in ("extension", "direct"):
        runs = windows(lines, f"{mode}-a{attempt}")
        (out / f"timeline-{mode}.md").write_text(
            timeline_md(timeline(runs), f"Timeline, {mode} runs ({len(runs)})"))
        (out / f"path-{mode}.md").write_text(
            critical_md(critical_path(runs), f"Critical path, {mode} runs ({len(runs)})"))
        (out / f"spans-{mode}.md").write_text(
            spans_md(spans(runs), len(runs), f"Traced calls, {mode} runs ({len(runs)})"))
        walls = [(end - start) / 1e6 for start, end, _ in runs]
        summary.append(f"{mode}: median {statistics.median(walls):.2f} ms over {len(walls)} "
                       f"runs (min {min(walls):.2f}, max {max(walls):.2f})")
    ext, direct = (statistics.median(times[k]) for k in ("extension", "direct"))
    summary.append(f"added: {1000 * (ext - direct):.2f} ms (medians of the timed runs)")
    return "\n".join(summary)


def sweep(configs: list[str], runs: int, repeat: int, flow: str, out: Path,
          relay: str | None = None, ticks: int = 200) -> str:
    """Each what-if configuration (`base`: none) in a fresh stack, untraced, `repeat`
    times, the configurations taking turns: a table of the added ms (or, with `relay`,
    of the relay figure's p50 and p95)."""
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in range(repeat):
        for config in configs:
            folder = out / f"{config.replace(',', '+')}-{r}"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--no-trace", "--runs",
                   str(runs), "--flow", flow, "--out", str(folder)]
            if relay:
                cmd += ["--relay", relay, "--ticks", str(ticks)]
            if config != "base":
                cmd += ["--whatif", config]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            if relay:
                got = json.loads((folder / f"relay-{relay}.json").read_text())
                results[config].append({"value": got["ms"]["p95"], "p50": got["ms"]["p50"],
                                        "foreign": got["foreign_share"]})
            else:
                got = json.loads((folder / "result.json").read_text())
                results[config].append({"value": got["added_ms"],
                                        "p50": got["extension_ms"]["median"],
                                        "direct": got["direct_ms"]["median"],
                                        "foreign": got["foreign_share"]["timed_runs"]})
            print(f"[stages] {config} #{r}: {results[config][-1]}", flush=True)
    what = f"relay p95 ms ({relay})" if relay else "added ms"
    base = statistics.median(x["value"] for x in results["base"]) if "base" in results \
        else None
    text = [f"| what-if | {what}, each round | median | saving vs base | "
            + ("relay p50 ms |" if relay else "extension ms | direct ms |")
            + " foreign CPU (cores) |",
            "|---|---|---:|---:|---:|" + ("" if relay else "---:|") + "---|"]
    for config in configs:
        rows = results[config]
        value = statistics.median(x["value"] for x in rows)
        saving = f"{base - value:.2f}" if base is not None and config != "base" else ""
        cells = [f"`{config}`", ", ".join(str(x["value"]) for x in rows), f"{value:.2f}",
                 saving, f"{statistics.median(x['p50'] for x in rows):.2f}"]
        if not relay:
            cells.append(f"{statistics.median(x['direct'] for x in rows):.2f}")
        cells.append(", ".join(str(x["foreign"]) for x in rows))
        text.append("| " + " | ".join(cells) + " |")
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--flow", choices=("tiny", "upscale"), default="tiny")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-trace", action="store_true",
                        help="no tracing hook: only the timed runs and CPU per process")
    parser.add_argument("--relay", choices=("http", "runpod"),
                        help="trace the relay figure on this backend instead")
    parser.add_argument("--ticks", type=int, default=200, help="progress events (--relay)")
    parser.add_argument("--whatif", default="", metavar="NAME[,NAME]",
                        help="experiments of bench/tracehook/remote_exec_whatif.py")
    parser.add_argument("--sweep", metavar="CONFIG;CONFIG",
                        help="what-if configurations (`base`, or NAME[,NAME]) to compare, "
                        "untraced, each in its own stack")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of --sweep")
    parser.add_argument("--spy", type=int, metavar="RUNS", default=0,
                        help="then RUNS extension runs under py-spy (collapsed stacks)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="remote-exec-stages-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        text = sweep(args.sweep.split(";"), args.runs, args.repeat, args.flow, out,
                     args.relay, args.ticks)
        (out / "sweep.md").write_text(text)
        print(text)
        return 0
    trace = out / "trace.log"
    trace.unlink(missing_ok=True)
    use_hook(args.whatif)
    if args.relay:
        with tempfile.TemporaryDirectory(prefix="remote-exec-stages-run-") as tmp:
            figure = asyncio.run(relay_measure(Path(tmp), None if args.no_trace else trace,
                                               args.relay, args.ticks, 4))
        if args.no_trace:
            print(json.dumps(figure, indent=1))
            (out / f"relay-{args.relay}.json").write_text(json.dumps(figure, indent=1) + "\n")
            return 0
        hops, total = relay_hops(read_trace(trace), args.relay)
        text = relay_md(args.relay, hops, total, figure)
        (out / f"relay-{args.relay}.md").write_text(text)
        print(text)
        return 0
    with tempfile.TemporaryDirectory(prefix="remote-exec-stages-run-") as tmp:
        times, cpu = asyncio.run(measure(
            Path(tmp), None if args.no_trace else trace, args.runs, args.flow,
            out if args.spy else None, args.spy))
    (out / "cpu.json").write_text(json.dumps(cpu, indent=2) + "\n")
    ext, direct = (statistics.median(times[k]) for k in ("extension", "direct"))
    (out / "result.json").write_text(json.dumps({
        "whatif": args.whatif, "traced": not args.no_trace,
        "added_ms": round(1000 * (ext - direct), 2),
        "extension_ms": figures.stats([1000 * t for t in times["extension"]]),
        "direct_ms": figures.stats([1000 * t for t in times["direct"]]),
        "foreign_share": cpu["foreign_share"]}, indent=1) + "\n")
    if args.no_trace:
        print(f"added: {1000 * (ext - direct):.2f} ms; extension {1000 * ext:.2f} ms, "
              f"direct {1000 * direct:.2f} ms (medians, untraced)")
    else:
        print(analyse(trace, out, times, cpu["foreign_share"]["attempt"]))
    print(json.dumps(cpu, indent=2))
    print(f"details in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
