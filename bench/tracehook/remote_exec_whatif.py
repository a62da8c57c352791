"""What-if experiments for `bench/stages.py --whatif NAME[,NAME...]`.

Each experiment changes one thing in the running processes (never a file of the
product) so its effect on a figure is measured rather than guessed. They are
stand-ins for product changes, kept as small as the question allows; they are
not fit to ship (no error handling beyond the benchmark's happy path).

`sitecustomize` applies them as modules load, when `BENCH_WHATIF` names them:

- `nofsync`: job records and the journal are written without fsync (local, worker).
- `noprobe`: the worker skips its per-job `GET /queue` health probe while its ComfyUI
  is known healthy.
- `hashinline`: the extension scans and hashes inputs on the loop, not in a thread
  (nothing to hash in the tiny flow; cached hashes are the common case).
- `describeinline`: the worker describes (stat, sha256) outputs on the loop.
- `writeinline`: the extension writes downloaded chunks on the loop, not in a thread.
- `inlineoutputs`: the worker puts outputs up to 256 KiB into the `executed` event
  (base64) and the extension lands them from there, with no download request.
- `sseyield`: the worker lets the SSE writers run after each ComfyUI message before
  it reads the next one.
- `sniffio`: `import sniffio` succeeds in the local ComfyUI (httpcore's failing
  import on every request is gone), as installing sniffio there would do.
- `aiohttp`: the extension's HttpBackend submits, follows SSE and downloads with
  aiohttp (already in ComfyUI) instead of httpx.
- `poll50`: the runpod backend polls `/stream` every 50 ms while events flow (0.1 s).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

INLINE_MAX = 256 * 1024
WANTED = {w for w in os.environ.get("BENCH_WHATIF", "").split(",") if w}
_inline: dict[str, str] = {}  # sha256 -> base64, in the process that has it


class _InlineThreads:
    """An `asyncio` stand-in for one module: the same, but `to_thread` runs inline."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def to_thread(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)


def fsutil(mod: Any) -> None:
    if "nofsync" not in WANTED:
        return
    import tempfile

    def atomic_write_json(path: Path, data: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, path)

    mod.atomic_write_json = atomic_write_json


def comfy_process(mod: Any) -> None:
    if "noprobe" not in WANTED:
        return
    orig = mod.ComfyProcess.ensure_healthy

    async def ensure_healthy(self: Any, timeout: Any = None, session: Any = None) -> None:
        if self.healthy:
            return
        await orig(self, timeout, session)

    mod.ComfyProcess.ensure_healthy = ensure_healthy


def jobrun(mod: Any) -> None:
    if "hashinline" in WANTED:
        mod.asyncio = _InlineThreads()


def runner(mod: Any) -> None:
    if "describeinline" in WANTED:
        mod.asyncio = _InlineThreads()
    if "inlineoutputs" in WANTED:
        orig_describe = mod.describe

        def describe(dirs: Any, node_id: str, ui: Any, url_prefix: str = "") -> Any:
            files = orig_describe(dirs, node_id, ui, url_prefix)
            for f in files:
                if f.size <= INLINE_MAX:
                    path = dirs.resolve(f.type, f.subfolder, f.filename)
                    _inline[f.sha256] = base64.b64encode(path.read_bytes()).decode()
            return files

        mod.describe = describe
    if "sseyield" in WANTED:
        orig = mod.Runner._on_message

        async def _on_message(self: Any, raw: Any) -> None:
            await orig(self, raw)
            await asyncio.sleep(0)

        mod.Runner._on_message = _on_message


def protocol(mod: Any) -> None:
    if "inlineoutputs" not in WANTED:
        return
    cls = mod.OutputFile
    to_dict, parse = cls.to_dict, cls.parse.__func__

    def to_dict_inline(self: Any) -> dict[str, Any]:
        out = to_dict(self)
        if self.sha256 in _inline:
            out["data"] = _inline[self.sha256]
        return out

    def parse_inline(klass: Any, raw: dict[str, Any]) -> Any:
        out = parse(klass, raw)
        if isinstance(raw.get("data"), str):
            _inline[out.sha256] = raw["data"]
        return out

    cls.to_dict = to_dict_inline
    cls.parse = classmethod(parse_inline)


def streams(mod: Any) -> None:
    if "writeinline" in WANTED:
        mod.asyncio = _InlineThreads()


def http_backend(mod: Any) -> None:
    cls = mod.HttpBackend
    if "inlineoutputs" in WANTED:
        download = cls.download

        async def download_inline(self: Any, job_id: str, output: Any, dest: Any) -> None:
            data = _inline.pop(output.sha256, None)
            if data is None:
                await download(self, job_id, output, dest)
            else:
                dest.write(base64.b64decode(data))

        cls.download = download_inline
    if "aiohttp" in WANTED:
        _aiohttp_backend(mod, cls)


def _aiohttp_backend(mod: Any, cls: Any) -> None:
    import aiohttp

    from comfy_remote_exec.protocol import Event

    def session(self: Any) -> aiohttp.ClientSession:
        if getattr(self, "_aio", None) is None:
            self._aio = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10))
        return self._aio

    async def submit(self: Any, spec: Any) -> str:
        async with session(self).post(f"{self.url}/v1/jobs", json=spec.to_dict(),
                                      headers=self.headers) as resp:
            body = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"submit: {resp.status} {body}")
            return str(body["job_id"])

    async def events(self: Any, job_id: str, after: int = 0) -> Any:
        async with session(self).get(f"{self.url}/v1/jobs/{job_id}/events",
                                     params={"after": str(after)},
                                     headers=self.headers) as resp:
            data: list[str] = []
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:
                    event = Event.parse(json.loads("\n".join(data)))
                    data = []
                    if event.seq <= after:
                        continue
                    after = event.seq
                    yield event
                    if event.terminal:
                        return

    async def download(self: Any, job_id: str, output: Any, dest: Any) -> None:
        if "inlineoutputs" in WANTED and output.sha256 in _inline:
            dest.write(base64.b64decode(_inline.pop(output.sha256)))
            return
        path = output.url or f"/v1/jobs/{job_id}/outputs/{output.type}/{output.relpath}"
        async with session(self).get(f"{self.url}{path}", headers=self.headers) as resp:
            async for chunk in resp.content.iter_chunked(1024 * 1024):
                dest.write(chunk)

    cls.submit, cls.events, cls.download = submit, events, download


def sniffio() -> None:
    if "sniffio" in WANTED and "sniffio" not in sys.modules:
        try:
            import sniffio as _real  # noqa: F401
        except ImportError:
            stub = types.ModuleType("sniffio")
            stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
            sys.modules["sniffio"] = stub


def runpod_backend(mod: Any) -> None:
    if "poll50" in WANTED:
        mod.POLL_MIN = 0.05


PATCHES = {
    "comfy_remote_exec.fsutil": fsutil,
    "comfy_remote_exec.protocol": protocol,
    "comfy_remote_exec.worker.comfy.comfy_process": comfy_process,
    "comfy_remote_exec.worker.comfy.runner": runner,
    "comfy_remote_exec.extension.jobrun": jobrun,
    "comfy_remote_exec.backends.streams": streams,
    "comfy_remote_exec.backends.http": http_backend,
    "comfy_remote_exec.backends.runpod": runpod_backend,
}
