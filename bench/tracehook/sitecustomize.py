"""Stage tracing for `bench/stages.py`: loaded as `sitecustomize` in every process it starts.

`bench/stages.py` puts this folder first on `PYTHONPATH` and names a trace file
in `BENCH_TRACE`; the local ComfyUI (with the extension), the worker and the
worker's ComfyUI then all import this module at start-up. It changes no code on
disk: an import hook wraps a few functions of ComfyUI and of comfy_remote_exec
as their modules load, and each wrapper appends one line per call to the trace
file: `monotonic_ns role pid event detail`. CLOCK_MONOTONIC is one clock for the
whole machine, so lines of the three processes sort into one timeline.

Nothing happens unless `BENCH_TRACE` is set. `BENCH_WHATIF` (with or without
tracing) applies the experiments of `remote_exec_whatif`. The cost per traced call is one
`os.write` of a short line (a few microseconds).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.abc
import os
import sys
import threading
import time
from typing import Any

TRACE = os.environ.get("BENCH_TRACE")
_fd: int | None = None


def role() -> str:
    argv = " ".join(getattr(sys, "orig_argv", sys.argv))
    if "main.py" in argv:
        # The extension's ComfyUI is started with the backend in its environment.
        return "local" if os.environ.get("REMOTE_EXEC_BACKEND") else "comfy"
    if "comfy_remote_exec.worker" in argv or "comfy_remote_exec/worker" in argv:
        return "worker"
    if "comfy_remote_exec.platforms.runpod.handler" in argv:
        return "handler"
    return "other"


ROLE = "?"


def mark(event: str, detail: str = "") -> None:
    global _fd
    if _fd is None:
        _fd = os.open(TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # type: ignore[arg-type]
    line = f"{time.monotonic_ns()} {ROLE} {os.getpid()} {event} {detail}".rstrip() + "\n"
    os.write(_fd, line.encode())


def _detail(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return fn(*args, **kwargs) if fn is not None else ""


def span(owner: Any, name: str, label: str, detail: Any = None) -> None:
    """Wrap `owner.name` (sync or async) with `label>` and `label<` marks."""
    orig = getattr(owner, name)
    if asyncio.iscoroutinefunction(orig):
        @functools.wraps(orig)
        async def awrapped(*args: Any, **kwargs: Any) -> Any:
            mark(label + ">", _safe(detail, args, kwargs))
            try:
                return await orig(*args, **kwargs)
            finally:
                mark(label + "<")
        setattr(owner, name, awrapped)
    else:
        @functools.wraps(orig)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            mark(label + ">", _safe(detail, args, kwargs))
            try:
                return orig(*args, **kwargs)
            finally:
                mark(label + "<")
        setattr(owner, name, wrapped)


def _safe(detail: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    try:
        return str(_detail(detail, args, kwargs)).replace("\n", " ")
    except Exception as exc:  # a detail must never break the traced call
        return f"?{type(exc).__name__}"


def agen(owner: Any, name: str, label: str, detail: Any) -> None:
    """Wrap an async generator method: a mark per item yielded."""
    orig = getattr(owner, name)

    @functools.wraps(orig)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        mark(label + ">")
        async for item in orig(*args, **kwargs):
            mark(label, _safe(detail, (item,), {}))
            yield item
            mark(label + "+")  # the consumer asked for the next one
    setattr(owner, name, wrapped)


def desc(kind: Any, data: Any) -> str:
    """`type node` (and `value` for progress) of an event, for matching across processes."""
    if not isinstance(data, dict):
        return str(kind)
    if kind == "progress":
        return f"{kind} {data.get('node')} {data.get('value')}"
    return f"{kind} {data.get('node')}"


def pdesc(payload: Any) -> str:
    """`desc` of a typed payload (protocol.events), read off its attributes."""
    kind = getattr(payload, "TYPE", None) or getattr(payload, "type", "?")
    data = {"node": getattr(payload, "node", None), "value": getattr(payload, "value", None)}
    return desc(kind, data)


# -- patches, by module --------------------------------------------------------------


def _http_middleware() -> Any:
    from aiohttp import web

    @web.middleware
    async def trace_http(request: Any, handler: Any) -> Any:
        mark("http>", f"{request.method} {request.path}")
        try:
            return await handler(request)
        finally:
            mark("http<", f"{request.method} {request.path}")

    return trace_http


def patch_server(mod: Any) -> None:
    cls = mod.PromptServer
    init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.app.middlewares.insert(0, _http_middleware())

    cls.__init__ = __init__

    def ev(self: Any, event: Any, data: Any, sid: Any = None) -> str:
        return desc(event, data) if isinstance(event, str) else f"binary{event}"

    span(cls, "send_sync", "send_sync", ev)
    span(cls, "send", "ws_send", ev)


def patch_execution(mod: Any) -> None:
    span(mod, "validate_prompt", "validate", lambda pid, *a, **k: "")
    span(mod.PromptQueue, "put", "queue_put", lambda self, item: item[1])
    span(mod.PromptQueue, "task_done", "task_done")
    span(mod.PromptExecutor, "execute", "execute", lambda self, p, pid, *a, **k: pid)


def patch_nodes(mod: Any) -> None:
    span(mod.SaveImage, "save_images", "save_images")


def patch_gc() -> None:
    import gc

    orig = gc.collect

    def collect(*args: Any) -> int:
        if threading.current_thread() is threading.main_thread():
            return orig(*args)
        mark("gc>")
        try:
            return orig(*args)
        finally:
            mark("gc<")

    gc.collect = collect


def patch_to_thread() -> None:
    orig = asyncio.to_thread

    async def to_thread(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        name = getattr(func, "__qualname__", getattr(func, "__name__", "?"))
        mark("to_thread>", name)

        def run() -> Any:
            mark("thread_run>", name)
            try:
                return func(*args, **kwargs)
            finally:
                mark("thread_run<", name)

        try:
            return await orig(run)
        finally:
            mark("to_thread<", name)

    asyncio.to_thread = to_thread


# The extension (local ComfyUI).

def patch_core(mod: Any) -> None:
    span(mod.RemoteExec, "accept", "accept")


def patch_journal(mod: Any) -> None:
    span(mod.Journal, "save", "journal_save", lambda self, job: job.state)
    span(mod.Journal, "remove", "journal_remove")


def patch_inputs(mod: Any) -> None:
    span(mod.InputHasher, "collect", "hash_inputs")


def patch_jobrun(mod: Any) -> None:
    cls = mod.JobRun
    span(cls, "run", "jobrun")
    span(cls, "_submit", "submit_all")
    span(cls, "_relay", "handle", lambda self, event, payload: pdesc(payload))
    span(cls, "_land", "land_all")
    span(cls, "_write_history", "history")
    span(cls, "_end", "end")


def patch_landing(mod: Any) -> None:
    span(mod.Lander, "land", "land")
    span(mod.Lander, "_place", "place")


def patch_http_backend(mod: Any) -> None:
    cls = mod.HttpBackend
    span(cls, "submit", "post_job")
    span(cls, "download", "download")


def patch_jobapi_client(mod: Any) -> None:
    """Every event stream the extension follows, the one a submission opened too."""
    agen(mod.JobApiClient, "_follow", "sse_event", lambda e: f"{pdesc(e.payload)} seq={e.seq}")


def patch_adapter(mod: Any) -> None:
    cls = mod.ComfyHost
    span(cls, "validate", "host_validate")
    span(cls, "add_history", "add_history")
    span(cls, "queue_changed", "queue_changed")


def patch_dispatcher(mod: Any) -> None:
    span(mod.Dispatcher, "add", "dispatch_add")


# The worker.

def patch_worker_app(mod: Any) -> None:
    build = mod.build_app

    def build_app(*args: Any, **kwargs: Any) -> Any:
        app = build(*args, **kwargs)
        app.middlewares.insert(0, _http_middleware())
        return app

    mod.build_app = build_app


def patch_service(mod: Any) -> None:
    cls = mod.JobService
    span(cls, "submit", "service_submit")
    orig = cls.stream_batches

    async def stream_batches(*args: Any, **kwargs: Any) -> Any:
        """A mark per event of each batch the SSE writer takes (it writes them at once)."""
        mark("stream_yield>")
        async for batch in orig(*args, **kwargs):
            for e in batch:
                mark("stream_yield", f"{pdesc(e.payload)} seq={e.seq}")
            yield batch
            mark("stream_yield+")

    cls.stream_batches = stream_batches


def patch_jobs(mod: Any) -> None:
    span(mod.JobStore, "save", "job_save")
    span(mod.JobStore, "append_event", "append_event",
         lambda self, job, e: f"{e.type} {e.seq}")
    span(mod.Job, "event", "job_event", lambda self, payload: pdesc(payload))


def patch_runner(mod: Any) -> None:
    cls = mod.Runner
    span(cls, "submit", "runner_submit")
    span(cls, "_check_models", "check_models")
    span(cls, "_queue", "queue_prompt")
    span(cls, "_describe", "describe")
    span(cls, "_complete", "complete")


def patch_comfy_client(mod: Any) -> None:
    orig = mod.translate

    def translate(raw: Any) -> Any:
        msg = orig(raw)
        if msg is not None:
            mark("ws_in", pdesc(msg.payload))
        return msg

    mod.translate = translate


def patch_runpod_backend(mod: Any) -> None:
    cls = mod.RunpodBackend
    span(cls, "_call", "runpod_call", lambda self, method, path, *a, **k:
         f"{method} {path.split('/')[1]}")
    agen(cls, "events", "sse_event", lambda e: f"{pdesc(e.payload)} seq={e.seq}")


def patch_rp_job(mod: Any) -> None:
    """The RunPod SDK posts each chunk the handler yields (job-stream)."""
    orig = mod.stream_result

    async def stream_result(session: Any, job_data: Any, job: Any) -> Any:
        events = (job_data.get("output") or {}).get("events") or []
        mark("sdk_stream>", " ".join(desc(e.get("type"), e.get("data")).replace(" ", ":")
                                     for e in events)[:300])
        try:
            return await orig(session, job_data, job)
        finally:
            mark("sdk_stream<")

    mod.stream_result = stream_result


def patch_comfy_process(mod: Any) -> None:
    span(mod.ComfyProcess, "ensure_healthy", "ensure_healthy")


PATCHES = {
    "server": patch_server,
    "execution": patch_execution,
    "nodes": patch_nodes,
    "comfy_remote_exec.extension.core": patch_core,
    "comfy_remote_exec.extension.journal": patch_journal,
    "comfy_remote_exec.extension.inputs": patch_inputs,
    "comfy_remote_exec.extension.jobrun": patch_jobrun,
    "comfy_remote_exec.extension.landing": patch_landing,
    "comfy_remote_exec.extension.adapter": patch_adapter,
    "comfy_remote_exec.extension.dispatcher": patch_dispatcher,
    "comfy_remote_exec.backends.http": patch_http_backend,
    "comfy_remote_exec.jobapi.client": patch_jobapi_client,
    "comfy_remote_exec.worker.comfy.comfy_client": patch_comfy_client,
    "comfy_remote_exec.worker.app": patch_worker_app,
    "comfy_remote_exec.worker.service.service": patch_service,
    "comfy_remote_exec.worker.service.jobs": patch_jobs,
    "comfy_remote_exec.worker.comfy.runner": patch_runner,
    "comfy_remote_exec.worker.comfy.comfy_process": patch_comfy_process,
    "comfy_remote_exec.backends.runpod": patch_runpod_backend,
    "runpod.serverless.modules.rp_job": patch_rp_job,
}


class PatchingFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: lets the other finders find a module, then patches it after
    it has run."""

    def __init__(self, patches: dict[str, list[Any]]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patches = self.patches.get(name)
        if not patches:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            for patch in patches:
                try:
                    patch(module)
                except Exception as exc:
                    _report(f"patch_failed {name} {type(exc).__name__}: {exc}")

        loader.exec_module = exec_module
        return spec


def _report(text: str) -> None:
    if TRACE:
        mark("patch_failed", text)
    else:
        sys.stderr.write(f"[bench hook] {text}\n")


def _install() -> None:
    global ROLE
    ROLE = role()
    if ROLE == "other":
        return
    patches: dict[str, list[Any]] = {}
    if TRACE:
        if ROLE in ("local", "comfy"):
            patch_gc()
        if ROLE in ("local", "worker"):
            patch_to_thread()
        for name, patch in PATCHES.items():
            patches.setdefault(name, []).append(patch)
        mark("process_start", " ".join(sys.argv)[:200].replace(" ", "_"))
    if os.environ.get("BENCH_WHATIF"):
        import remote_exec_whatif as whatif

        whatif.sniffio()
        # What-if patches go first: tracing wrappers then wrap the changed code.
        for name, patch in whatif.PATCHES.items():
            patches.setdefault(name, []).insert(0, patch)
    if patches:
        sys.meta_path.insert(0, PatchingFinder(patches))


_install()
