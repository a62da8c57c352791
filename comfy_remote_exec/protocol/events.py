"""Job events (protocol v2): one typed payload per event type.

A job streams numbered `Event`s: ComfyUI's own execution messages, under
their ComfyUI names, plus `preview` (a preview frame) and `job_status` (the
job's lifecycle; a terminal one is the last event of a stream). Each type has
a dataclass payload here, as ComfyUI's `comfy_execution/progress.py` types its
state; consumers match on the payload's class, never on a string.

Node ids are the workflow's own ids: the worker runs the graph unchanged, so
the extension re-emits events without a mapping table. Keys a ComfyUI sends
that a payload does not name are kept in its `extra` and sent on, so a newer
ComfyUI's messages arrive whole. An event type this side does not know
arrives as `Unknown` and is passed on untouched: a newer worker can add
events without breaking an older extension.

Wire form: `{"v": 2, "seq", "type", "data", "ts"}`; preview images are base64
on the wire and bytes in memory. The version is negotiated: clients send
`Remote-Exec-Protocol: 2` (RunPod jobs carry `"protocol": 2`), the worker
refuses a version it does not speak, and either side refuses an event of
another version, with a `ProtocolMismatch` that says which side to upgrade.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from ..errors import BadRequest, ProtocolMismatch, RemoteExecError
from .common import JsonObject, JsonValue
from .lifecycle import JOB_STATUSES, TERMINAL_STATUSES
from .outputs import OutputFile
from .timing import JobTiming

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
PROTOCOL_HEADER = "Remote-Exec-Protocol"


def check_version(version: object, *, peer: str) -> None:
    """Refuse a protocol version this side does not speak; `peer` names who sent it."""
    if version in SUPPORTED_VERSIONS:
        return
    newer = isinstance(version, int) and version > PROTOCOL_VERSION
    raise ProtocolMismatch(
        f"the {peer} speaks protocol v{version}, this side speaks v{PROTOCOL_VERSION}: "
        f"update {'this side' if newer else f'the {peer}'} so both speak the same version",
        details={"theirs": version if isinstance(version, int) else str(version),
                 "ours": PROTOCOL_VERSION})


def _s(data: JsonObject, key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def _n(data: JsonObject, key: str) -> float:
    value = data.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _ids(value: JsonValue) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _extra(data: JsonObject, known: frozenset[str]) -> JsonObject:
    return {k: v for k, v in data.items() if k not in known}


def _put(out: JsonObject, extra: JsonObject) -> JsonObject:
    return {**extra, **out} if extra else out


@dataclass(slots=True)
class ExecutionStart:
    TYPE: ClassVar[str] = "execution_start"
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return dict(self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> ExecutionStart:
        return cls(extra=dict(data))


@dataclass(slots=True)
class ExecutionSuccess:
    TYPE: ClassVar[str] = "execution_success"
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return dict(self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> ExecutionSuccess:
        return cls(extra=dict(data))


@dataclass(slots=True)
class ExecutionCached:
    TYPE: ClassVar[str] = "execution_cached"
    nodes: list[str] = field(default_factory=list)
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"nodes": list(self.nodes)}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> ExecutionCached:
        return cls(_ids(data.get("nodes")), _extra(data, frozenset({"nodes"})))


_NODE_KEYS = frozenset({"node", "display_node"})


@dataclass(slots=True)
class Executing:
    """`node` None means ComfyUI is done with the prompt."""

    TYPE: ClassVar[str] = "executing"
    node: str | None = None
    display_node: str | None = None
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"node": self.node, "display_node": self.display_node}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> Executing:
        return cls(_s(data, "node"), _s(data, "display_node"), _extra(data, _NODE_KEYS))


@dataclass(slots=True)
class Progress:
    TYPE: ClassVar[str] = "progress"
    value: float = 0
    max: float = 0
    node: str | None = None
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"value": self.value, "max": self.max, "node": self.node}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> Progress:
        return cls(_n(data, "value"), _n(data, "max"), _s(data, "node"),
                   _extra(data, frozenset({"value", "max", "node"})))


_STATE_KEYS = frozenset({"value", "max", "state", "node_id", "display_node_id",
                         "parent_node_id", "real_node_id"})


@dataclass(slots=True)
class NodeProgress:
    """One node's entry in `progress_state` (ComfyUI's `NodeProgressState`)."""

    value: float = 0
    max: float = 0
    state: str = "pending"
    node_id: str | None = None
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"value": self.value, "max": self.max, "state": self.state,
                     "node_id": self.node_id, "display_node_id": self.display_node_id,
                     "parent_node_id": self.parent_node_id,
                     "real_node_id": self.real_node_id}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> NodeProgress:
        return cls(_n(data, "value"), _n(data, "max"), str(data.get("state") or "pending"),
                   _s(data, "node_id"), _s(data, "display_node_id"),
                   _s(data, "parent_node_id"), _s(data, "real_node_id"),
                   _extra(data, _STATE_KEYS))


@dataclass(slots=True)
class ProgressState:
    TYPE: ClassVar[str] = "progress_state"
    nodes: dict[str, NodeProgress] = field(default_factory=dict)
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"nodes": {k: v.to_data() for k, v in self.nodes.items()}}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> ProgressState:
        raw = data.get("nodes")
        nodes = {str(k): NodeProgress.from_data(v) for k, v in raw.items()
                 if isinstance(v, dict)} if isinstance(raw, dict) else {}
        return cls(nodes, _extra(data, frozenset({"nodes"})))


@dataclass(slots=True)
class Executed:
    """A node's UI `output`, as ComfyUI sent it, and `files`: the worker's
    descriptors of the files it lists (by `key` and `index`)."""

    TYPE: ClassVar[str] = "executed"
    node: str = ""
    display_node: str | None = None
    output: JsonObject = field(default_factory=dict)
    files: list[OutputFile] = field(default_factory=list)
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        out: JsonObject = {"node": self.node, "display_node": self.display_node,
                           "output": self.output}
        if self.files:
            out["files"] = [f.to_dict() for f in self.files]
        return _put(out, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> Executed:
        output = data.get("output")
        files = data.get("files")
        return cls(str(data.get("node") or ""), _s(data, "display_node"),
                   output if isinstance(output, dict) else {},
                   [OutputFile.parse(f) for f in files] if isinstance(files, list) else [],
                   _extra(data, frozenset({"node", "display_node", "output", "files"})))


_ERROR_KEYS = frozenset({"node_id", "node_type", "executed", "exception_message",
                         "exception_type", "traceback", "current_inputs", "current_outputs"})


@dataclass(slots=True)
class ExecutionError:
    TYPE: ClassVar[str] = "execution_error"
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = field(default_factory=list)
    exception_message: str = ""
    exception_type: str = ""
    traceback: list[str] = field(default_factory=list)
    current_inputs: JsonValue = None
    current_outputs: JsonValue = None
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"node_id": self.node_id, "node_type": self.node_type,
                     "executed": list(self.executed),
                     "exception_message": self.exception_message,
                     "exception_type": self.exception_type, "traceback": list(self.traceback),
                     "current_inputs": self.current_inputs,
                     "current_outputs": self.current_outputs}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> ExecutionError:
        tb = data.get("traceback")
        return cls(_s(data, "node_id"), _s(data, "node_type"), _ids(data.get("executed")),
                   str(data.get("exception_message") or ""),
                   str(data.get("exception_type") or ""),
                   [str(t) for t in tb] if isinstance(tb, list) else [],
                   data.get("current_inputs"), data.get("current_outputs"),
                   _extra(data, _ERROR_KEYS))


_INTERRUPT_KEYS = frozenset({"node_id", "node_type", "executed"})


@dataclass(slots=True)
class ExecutionInterrupted:
    TYPE: ClassVar[str] = "execution_interrupted"
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = field(default_factory=list)
    extra: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return _put({"node_id": self.node_id, "node_type": self.node_type,
                     "executed": list(self.executed)}, self.extra)

    @classmethod
    def from_data(cls, data: JsonObject) -> ExecutionInterrupted:
        return cls(_s(data, "node_id"), _s(data, "node_type"), _ids(data.get("executed")),
                   _extra(data, _INTERRUPT_KEYS))


@dataclass(slots=True)
class Preview:
    """A preview frame: the image bytes and the node it belongs to."""

    TYPE: ClassVar[str] = "preview"
    image: bytes = b""
    image_type: str = "image/jpeg"
    node: str | None = None
    display_node: str | None = None
    parent_node: str | None = None
    real_node: str | None = None

    def to_data(self) -> JsonObject:
        return {"node": self.node, "display_node": self.display_node,
                "parent_node": self.parent_node, "real_node": self.real_node,
                "image_type": self.image_type,
                "image": base64.b64encode(self.image).decode("ascii")}

    @classmethod
    def from_data(cls, data: JsonObject) -> Preview:
        try:
            image = base64.b64decode(str(data.get("image") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("preview.image is not valid base64") from None
        return cls(image, str(data.get("image_type") or "image/jpeg"), _s(data, "node"),
                   _s(data, "display_node"), _s(data, "parent_node"), _s(data, "real_node"))


@dataclass(slots=True)
class JobStatus:
    """The job's lifecycle status; a failed job's error is the error family's dict."""

    TYPE: ClassVar[str] = "job_status"
    status: str = "queued"
    error: RemoteExecError | None = None
    timing: JobTiming | None = None  # a terminal status's GPU seconds (`protocol.timing`)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_data(self) -> JsonObject:
        out: JsonObject = {"status": self.status}
        if self.error is not None:
            out["error"] = self.error.to_dict()
        if self.timing is not None:
            out["timing"] = self.timing.to_dict()
        return out

    @classmethod
    def from_data(cls, data: JsonObject) -> JobStatus:
        status = data.get("status")
        if status not in JOB_STATUSES:
            raise BadRequest(f"job_status.status {status!r} is not a job status")
        error = data.get("error")
        return cls(str(status),
                   RemoteExecError.from_dict(error) if isinstance(error, dict) else None,
                   JobTiming.parse(data.get("timing")))


@dataclass(slots=True)
class Unknown:
    """An event type this side does not know; passed on as it came."""

    TYPE: ClassVar[str] = ""
    type: str = ""
    data: JsonObject = field(default_factory=dict)

    def to_data(self) -> JsonObject:
        return self.data


Payload: TypeAlias = (ExecutionStart | ExecutionCached | Executing | Progress | ProgressState
                      | Executed | ExecutionSuccess | ExecutionError | ExecutionInterrupted
                      | Preview | JobStatus | Unknown)
COMFY_PAYLOADS: tuple[type[Payload], ...] = (
    ExecutionStart, ExecutionCached, Executing, Progress, ProgressState, Executed,
    ExecutionSuccess, ExecutionError, ExecutionInterrupted)
PAYLOADS: dict[str, type[Payload]] = {
    p.TYPE: p for p in (*COMFY_PAYLOADS, Preview, JobStatus)}
COMFY_EVENTS = frozenset(p.TYPE for p in COMFY_PAYLOADS)
# The ComfyUI messages that end a prompt, and the job status each means.
ENDINGS: dict[type[Payload], str] = {
    ExecutionSuccess: "completed", ExecutionError: "failed",
    ExecutionInterrupted: "cancelled"}


def payload_from(type_name: str, data: JsonObject) -> Payload:
    """The typed payload of an event (an `Unknown` for a type this side lacks)."""
    cls = PAYLOADS.get(type_name)
    if cls is None or cls is Unknown:
        return Unknown(type_name, data)
    return cls.from_data(data)  # type: ignore[union-attr]


@dataclass(slots=True)
class Event:
    """One event of a job's stream. `seq` starts at 1 and has no gaps."""

    seq: int
    payload: Payload
    ts: float = 0.0
    _json: str | None = field(default=None, repr=False, compare=False)

    @property
    def type(self) -> str:
        p = self.payload
        return p.type if isinstance(p, Unknown) else p.TYPE

    @property
    def terminal(self) -> bool:
        return isinstance(self.payload, JobStatus) and self.payload.terminal

    def to_wire(self) -> JsonObject:
        return {"v": PROTOCOL_VERSION, "seq": self.seq, "type": self.type,
                "data": self.payload.to_data(), "ts": self.ts}

    def wire_json(self) -> str:
        """`to_wire()` as compact JSON, encoded once: the worker's event log and every
        stream reader send the same text (the payload is not changed once logged)."""
        if self._json is None:
            self._json = json.dumps(self.to_wire(), separators=(",", ":"))
        return self._json

    @classmethod
    def parse(cls, raw: object) -> Event:
        if not isinstance(raw, dict):
            raise BadRequest("an event must be an object")
        obj: JsonObject = raw
        check_version(obj.get("v"), peer="worker")
        seq, kind, ts = obj.get("seq"), obj.get("type"), obj.get("ts", 0.0)
        if not isinstance(seq, int) or not isinstance(kind, str) or not kind:
            raise BadRequest("an event needs an integer seq and a type")
        data = obj.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest("event.data must be an object")
        payload = payload_from(kind, data)
        return cls(seq, payload, float(ts) if isinstance(ts, (int, float)) else 0.0)

