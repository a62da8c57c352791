"""The dispatcher's ordering, without ComfyUI: a recording host and a scripted backend.

The real-ComfyUI tests cover the same paths end to end; here the timing that
matters is pinned down: a job leaves the queue before its last `executing`
goes out (as in ComfyUI), even while the remote's final status is still on
its way, and the next queued job starts then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from comfy_remote_exec.backends.base import Submitted
from comfy_remote_exec.extension.dispatcher import Dispatcher
from comfy_remote_exec.extension.journal import Journal, RemoteJob
from comfy_remote_exec.protocol import (
    Event,
    Executing,
    ExecutionStart,
    ExecutionSuccess,
    JobSpec,
    JobStatus,
    Payload,
)


class RecordingHost:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dispatcher: Dispatcher | None = None
        self.sent: list[tuple[str, dict[str, Any], list[str]]] = []
        self.history: dict[str, dict[str, Any]] = {}

    input_dir = property(lambda self: self.root / "input")
    output_dir = property(lambda self: self.root / "output")
    temp_dir = property(lambda self: self.root / "temp")
    comfyui_root = property(lambda self: self.root)

    def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        assert self.dispatcher is not None
        running, _ = self.dispatcher.queue_items()
        self.sent.append((event, data, [item[1] for item in running]))

    def send_preview(self, *args: Any) -> None: ...
    def next_number(self, front: bool) -> float: return 0
    def on_prompt(self, body: dict[str, Any]) -> dict[str, Any]: return body
    def queue_changed(self) -> None: ...
    def model_path(self, folder: str, name: str) -> Path | None: return None
    def settings(self, user: str = "default") -> dict[str, Any]: return {}
    def request_user(self, request: Any) -> str: return "default"

    def add_history(self, prompt_id: str, entry: dict[str, Any]) -> None:
        self.history[prompt_id] = entry


class ScriptedBackend:
    """Plays a successful run; the remote's final status waits for `release`."""

    name = "scripted"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.submitted: list[str] = []
        self.two_submitted = asyncio.Event()

    async def submit(self, spec: JobSpec, files: Mapping[str, Path]) -> Submitted:
        self.submitted.append(spec.extra["local_prompt_id"])
        if len(self.submitted) == 2:
            self.two_submitted.set()
        return Submitted(f"remote-{len(self.submitted)}")

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        script: list[Payload] = [JobStatus("running"), ExecutionStart(), ExecutionSuccess(),
                                 Executing(None)]
        for seq, payload in enumerate(script, 1):
            yield Event(seq, payload, 0.0)
        await self.release.wait()
        yield Event(len(script) + 1, JobStatus("completed"), 0.0)

    async def cancel(self, job_id: str) -> None: ...
    async def close(self) -> None: ...


def job(prompt_id: str, number: float) -> RemoteJob:
    return RemoteJob(prompt_id=prompt_id, number=number, prompt={}, extra_data={},
                     client_id="c", outputs_to_execute=[], backend="scripted")


async def test_a_job_leaves_the_queue_before_its_last_message(tmp_path: Path) -> None:
    host = RecordingHost(tmp_path)
    backend = ScriptedBackend()
    dispatcher = Dispatcher(host, Journal(tmp_path / "journal"), lambda _: backend,
                            parallel=lambda: 1)
    host.dispatcher = dispatcher
    dispatcher.add(job("first", 1))
    dispatcher.add(job("second", 2))
    try:
        await asyncio.wait_for(backend.two_submitted.wait(), 10)
        first_end = next(running for kind, data, running in host.sent
                         if kind == "executing" and data["prompt_id"] == "first")
        assert "first" not in first_end, "the job was still queued at its last message"
        assert host.history["first"]["status"]["status_str"] == "success"
        found = dispatcher.find("first")
        assert found is not None and found.status == "completed"
        dispatcher.journal.flush()
        assert not (tmp_path / "journal" / "first.json").exists(), "a restart would replay it"
        assert backend.submitted == ["first", "second"]
    finally:
        backend.release.set()
        await dispatcher.close()
