"""The chunks of a RunPod job's stream and answers (protocol v2).

RunPod carries a job's output as the items a handler yields, in order
(`/stream/{id}` while it runs, `/status/{id}` after), and its error as one
string. Our handler and the `runpod` backend speak these shapes:

- `{"events": [event, ...]}`: wire events, in order, at most ~1 MB a chunk;
- `{"file_part": {"sha256", "index", "data"}}`: a piece of an output file too
  large to travel inline; every part of a file comes before the event that
  lists the file (its descriptor says how many `parts`);
- `{"op": "blobs", "sha256": [...]}` as a job's input asks which inputs the
  endpoint lacks, answered by `{"missing": [...], "uploads": {sha: url}}`;
- a failure is `{"error": "<the error family's dict, as JSON>"}`, so RunPod's
  `error` string still carries the code, message, node and log tail.

`runpod_timing` reads RunPod's `delayTime` and `executionTime` into a job's
GPU seconds (`protocol.timing`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..errors import RemoteExecError
from .common import JsonObject, as_object, b64encode, decode_base64, is_sha256, require
from .events import Event
from .timing import JobTiming

PART_LIMIT = 1024 * 1024


@dataclass(slots=True)
class EventsChunk:
    events: list[Event]

    def to_wire(self) -> JsonObject:
        return {"events": [e.to_wire() for e in self.events]}


@dataclass(slots=True)
class FilePart:
    sha256: str
    index: int
    data: bytes

    def to_wire(self) -> JsonObject:
        return {"file_part": {"sha256": self.sha256, "index": self.index,
                              "data": b64encode(self.data)}}


@dataclass(slots=True)
class ErrorChunk:
    error: RemoteExecError

    def to_wire(self) -> JsonObject:
        return {"error": encode_error(self.error)}


Chunk: TypeAlias = EventsChunk | FilePart | ErrorChunk


def parse_chunk(raw: object) -> Chunk | None:
    """One stream item; None for what is not ours (e.g. the SDK's own progress)."""
    if not isinstance(raw, dict):
        return None
    if "events" in raw:
        events = raw["events"]
        require(isinstance(events, list), "chunk.events must be a list")
        assert isinstance(events, list)
        return EventsChunk([Event.parse(e) for e in events])
    if "file_part" in raw:
        part = as_object(raw["file_part"], "chunk.file_part")
        index = part.get("index")
        require(is_sha256(part.get("sha256")) and isinstance(index, int),
                "a file_part needs a sha256 and an index")
        assert isinstance(index, int)
        return FilePart(str(part["sha256"]), index,
                        decode_base64(part.get("data"), what="file_part.data",
                                      limit=PART_LIMIT))
    if "error" in raw:
        return ErrorChunk(decode_error(raw["error"]))
    return None


def encode_error(error: RemoteExecError) -> str:
    return json.dumps(error.to_dict())


def decode_error(raw: object, *, fallback: str = "the RunPod job failed") -> RemoteExecError:
    """The error from RunPod's `error` field: ours (JSON), the SDK's own report
    (`{"error_message": ...}`), or a plain string."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    if isinstance(value, dict) and value.get("message"):
        return RemoteExecError.from_dict(value)
    if isinstance(value, dict) and value.get("error_message"):
        return RemoteExecError(str(value["error_message"]), code="worker_error")
    return RemoteExecError(str(raw) if raw else fallback, code="runpod_failed")


@dataclass(slots=True)
class BlobsRequest:
    sha256: list[str]

    def to_wire(self) -> JsonObject:
        return {"op": "blobs", "sha256": list(self.sha256)}

    @classmethod
    def parse(cls, raw: JsonObject) -> BlobsRequest | None:
        if raw.get("op") != "blobs":
            return None
        hashes = raw.get("sha256")
        return cls([str(h) for h in hashes if is_sha256(h)] if isinstance(hashes, list) else [])


@dataclass(slots=True)
class BlobsAnswer:
    missing: list[str] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> JsonObject:
        return {"missing": list(self.missing), "uploads": dict(self.uploads)}

    @classmethod
    def parse(cls, raw: object) -> BlobsAnswer:
        obj = as_object(raw, "the blobs answer")
        missing, uploads = obj.get("missing"), obj.get("uploads")
        return cls([str(h) for h in missing] if isinstance(missing, list) else [],
                   {str(k): str(v) for k, v in uploads.items()}
                   if isinstance(uploads, dict) else {})


def _seconds(ms: object) -> float | None:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0:
        return None
    return float(ms) / 1000.0


def runpod_timing(worker: JobTiming | None, status: Mapping[str, Any]) -> JobTiming | None:
    """A RunPod job's GPU seconds, from RunPod's `/status` (or `/stream`) figures.

    RunPod reports `delayTime` (ms from `/run` until a worker took the job: its
    queue and, on a cold worker, the container's start) and `executionTime` (ms
    the handler held the job). The worker reports its own cold start (process
    start → ComfyUI ready) in the terminal `job_status`; that part of
    `delayTime` is the cold start, the rest the queue wait. `executionTime`,
    once RunPod knows it, is what it bills as execution; until then the
    worker's own queue and execution stand for it.
    """
    delay, execution = _seconds(status.get("delayTime")), _seconds(status.get("executionTime"))
    if delay is None and execution is None:
        return worker
    own = worker or JobTiming()
    cold, wait = own.cold_start_s, own.queue_wait_s
    run = own.queue_wait_s + own.execution_s
    if delay is not None:
        cold = min(cold, delay)
        wait = delay - cold
    return JobTiming(queue_wait_s=wait, cold_start_s=cold,
                     execution_s=execution if execution is not None else run)
