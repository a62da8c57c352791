"""Wire protocol v1, shared by the worker and the local extension.

This is the only place that knows the shape of what travels between the two
sides: the job spec a client submits, the events a job streams back, the
descriptors of its output files, and the error payload. Both sides parse with
the functions here, so a malformed message fails the same way everywhere, with
a `BadRequest` that names the offending field.

Node ids inside events are the workflow's own ids: the worker runs the graph
unchanged, so the extension can re-emit events without a mapping table.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import BadRequest, PayloadTooLarge

PROTOCOL_VERSION = 1

MAX_MEDIA_ITEMS = 10
MAX_MEDIA_BYTES = 50 * 1024 * 1024
MAX_NAME_LENGTH = 1024

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
)
JOB_STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})

# Events relayed from the remote ComfyUI, with their ComfyUI names, plus
# `preview` (a binary preview frame, base64 in `data`) and `job_status`
# (the job's own state; a terminal one is always the last event of a stream).
COMFY_EVENTS = (
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
)
PREVIEW = "preview"
JOB_STATUS = "job_status"
EVENT_TYPES = frozenset((*COMFY_EVENTS, PREVIEW, JOB_STATUS))

INPUT_TYPES = ("raw", "image_base64", "image_url")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


def _require(cond: bool, message: str, **details: Any) -> None:
    if not cond:
        raise BadRequest(message, code="invalid_request", details=details or None)


def _object(raw: object, where: str) -> dict[str, Any]:
    _require(isinstance(raw, dict), f"{where} must be an object")
    assert isinstance(raw, dict)
    return raw


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))


def safe_relpath(name: object, *, what: str = "file name") -> str:
    """Return `name` as a clean relative POSIX path, or raise `BadRequest`.

    Used on both sides for every name that comes from the other side: media
    names, output subfolders and file names. Refuses absolute paths, drive
    letters, `..`, empty or `.` components, NUL and other control characters.
    """
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{what} must be a non-empty string", code="unsafe_name")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"{what} is too long", code="unsafe_name")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        raise BadRequest(f"{what} {name!r} contains a control character", code="unsafe_name")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise BadRequest(f"{what} {name!r} is an absolute path", code="unsafe_name")
    parts = posix.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRequest(f"{what} {name!r} must not contain '..', '.' or empty parts",
                         code="unsafe_name")
    return "/".join(parts)


# ComfyUI's folder annotations on file values ("x.png [output]").
ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}


def split_annotation(value: str) -> tuple[str, str, str]:
    """`"x.png [output]"` -> `("x.png", " [output]", "output")`; no annotation: input."""
    for suffix, folder in ANNOTATIONS.items():
        if value.endswith(suffix):
            return value[: -len(suffix)], suffix, folder
    return value, "", "input"


def media_name(bare: str, folder: str) -> str:
    """The media name a referenced file travels under.

    Input files keep their name; an `x.png [output]` (or `[temp]`) value
    travels as `[output]/x.png`, so it never meets an input of the same name.
    """
    return bare if folder == "input" else f"[{folder}]/{bare}"


def decode_base64(data: object, *, what: str, limit: int = MAX_MEDIA_BYTES) -> bytes:
    """Strict base64 (a `data:` URL prefix is allowed); size-checked before decoding."""
    _require(isinstance(data, str) and bool(data), f"{what} must be a base64 string")
    assert isinstance(data, str)
    text = _DATA_URL.sub("", data, count=1).strip()
    if len(text) * 3 // 4 > limit + 3:
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes", code="too_large")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{what} is not valid base64: {exc}", code="bad_base64") from None
    if len(raw) > limit:
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes", code="too_large")
    return raw


@dataclass
class MediaItem:
    """One input file: inline base64 `data`, a `url` to fetch, or a blob `sha256`."""

    name: str
    data: str | None = None
    url: str | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, raw: object, index: int) -> MediaItem:
        where = f"media[{index}]"
        raw = _object(raw, where)
        name = safe_relpath(raw.get("name"), what=f"{where}.name")
        sources = [k for k in ("data", "url", "sha256") if raw.get(k) is not None]
        _require(len(sources) == 1, f"{where} needs exactly one of data, url or sha256")
        sha = raw.get("sha256")
        if sha is not None:
            _require(is_sha256(sha), f"{where}.sha256 must be 64 lowercase hex digits")
        url = raw.get("url")
        if url is not None:
            _require(isinstance(url, str), f"{where}.url must be a string")
        data = raw.get("data")
        if data is not None:
            _require(isinstance(data, str), f"{where}.data must be a base64 string")
        return cls(name=name, data=data, url=url, sha256=sha)


@dataclass
class InputOverride:
    """Set `workflow[node].inputs[field]`; image types upload the value first."""

    node: str
    field: str
    value: Any
    type: str = "raw"
    name: str | None = None

    @classmethod
    def parse(cls, raw: object, index: int) -> InputOverride:
        where = f"inputs[{index}]"
        raw = _object(raw, where)
        node, fld = raw.get("node"), raw.get("field")
        _require(isinstance(node, (str, int)) and str(node) != "", f"{where}.node is required")
        _require(isinstance(fld, str) and fld != "", f"{where}.field is required")
        kind = raw.get("type", "raw")
        _require(kind in INPUT_TYPES, f"{where}.type must be one of {', '.join(INPUT_TYPES)}")
        _require("value" in raw, f"{where}.value is required")
        name = raw.get("name")
        if name is not None:
            name = safe_relpath(name, what=f"{where}.name")
        return cls(node=str(node), field=str(fld), value=raw["value"], type=kind, name=name)


@dataclass
class JobSpec:
    """What a client submits. `workflow` is ComfyUI's API format."""

    workflow: dict[str, Any]
    inputs: list[InputOverride] = field(default_factory=list)
    media: list[MediaItem] = field(default_factory=list)
    webhook_url: str | None = None
    priority: int = 0
    user_id: str | None = None
    partial_execution_targets: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # ComfyUI's own `extra_data` for the prompt (e.g. `extra_pnginfo`, which puts the
    # editor's `workflow` into saved files); the worker's `client_id` always wins.
    extra_data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: object) -> JobSpec:
        raw = _object(raw, "the request body")
        workflow = raw.get("workflow")
        _require(workflow is not None, "'workflow' is required (ComfyUI API format)")
        _require(isinstance(workflow, dict) and bool(workflow),
                 "'workflow' must be a non-empty object mapping node ids to nodes")
        assert isinstance(workflow, dict)
        for node_id, node in workflow.items():
            _require(isinstance(node, dict) and isinstance(node.get("class_type"), str),
                     f"node {node_id!r} must be an object with a 'class_type'",
                     node_id=str(node_id))
            _require(isinstance(node.get("inputs", {}), dict),
                     f"node {node_id!r}: 'inputs' must be an object", node_id=str(node_id))
        media_raw = raw.get("media") or []
        _require(isinstance(media_raw, list), "'media' must be a list")
        if len(media_raw) > MAX_MEDIA_ITEMS:
            raise PayloadTooLarge(f"at most {MAX_MEDIA_ITEMS} media items per job",
                                  code="too_many_media")
        media = [MediaItem.parse(m, i) for i, m in enumerate(media_raw)]
        names = [m.name for m in media]
        _require(len(set(names)) == len(names), "media names must be unique")
        inputs_raw = raw.get("inputs") or []
        _require(isinstance(inputs_raw, list), "'inputs' must be a list")
        inputs = [InputOverride.parse(x, i) for i, x in enumerate(inputs_raw)]
        priority = raw.get("priority", 0)
        _require(isinstance(priority, int) and not isinstance(priority, bool),
                 "'priority' must be an integer")
        webhook = raw.get("webhook_url")
        _require(webhook is None or isinstance(webhook, str), "'webhook_url' must be a string")
        user_id = raw.get("user_id")
        _require(user_id is None or isinstance(user_id, str), "'user_id' must be a string")
        targets = raw.get("partial_execution_targets")
        _require(targets is None or (isinstance(targets, list)
                                     and all(isinstance(t, str) for t in targets)),
                 "'partial_execution_targets' must be a list of node ids")
        extra = raw.get("extra") or {}
        _require(isinstance(extra, dict), "'extra' must be an object")
        extra_data = raw.get("extra_data") or {}
        _require(isinstance(extra_data, dict), "'extra_data' must be an object")
        return cls(workflow=workflow, inputs=inputs, media=media, webhook_url=webhook,
                   priority=priority, user_id=user_id, partial_execution_targets=targets,
                   extra=extra, extra_data=extra_data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body; empty fields are left out, but an empty target list is kept
        (ComfyUI refuses it with `prompt_no_outputs`, which is not the same as none)."""
        out = {k: v for k, v in asdict(self).items() if v not in (None, [], {})}
        if self.partial_execution_targets is not None:
            out["partial_execution_targets"] = list(self.partial_execution_targets)
        return out | {"workflow": self.workflow}


@dataclass
class OutputFile:
    """One file a job produced, as listed in ComfyUI's UI output.

    `type` is ComfyUI's folder type (`output`, or `temp` for previews);
    `subfolder` and `filename` are relative to it. `url` is the download path
    on the worker, relative to its base URL.
    """

    node_id: str
    key: str
    filename: str
    subfolder: str
    type: str
    kind: str
    size: int
    sha256: str
    url: str = ""
    index: int = 0

    @property
    def preview(self) -> bool:
        return self.type == "temp"

    @property
    def relpath(self) -> str:
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"preview": self.preview}

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> OutputFile:
        """Parse an output descriptor from the other side; its names are untrusted."""
        filename = safe_relpath(raw.get("filename"), what="output filename")
        _require("/" not in filename, "output filename must not contain '/'")
        subfolder = raw.get("subfolder") or ""
        if subfolder:
            subfolder = safe_relpath(subfolder, what="output subfolder")
        _require(raw.get("type") in ("output", "temp", "input"), "bad output type")
        _require(is_sha256(raw.get("sha256")), "bad output sha256")
        return cls(node_id=str(raw.get("node_id", "")), key=str(raw.get("key", "")),
                   filename=filename, subfolder=subfolder, type=str(raw["type"]),
                   kind=str(raw.get("kind", "file")), size=int(raw.get("size", 0)),
                   sha256=str(raw["sha256"]), url=str(raw.get("url", "")),
                   index=int(raw.get("index", 0)))


@dataclass
class Event:
    """One event of a job's stream. `seq` starts at 1 and has no gaps."""

    seq: int
    type: str
    data: dict[str, Any]
    ts: float

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "seq": self.seq, "type": self.type,
                "data": self.data, "ts": self.ts}

    @classmethod
    def parse(cls, raw: object) -> Event:
        raw = _object(raw, "an event")
        version = raw.get("v", PROTOCOL_VERSION)
        _require(version == PROTOCOL_VERSION,
                 f"event protocol v{version} is not supported (this side speaks "
                 f"v{PROTOCOL_VERSION})")
        _require(isinstance(raw.get("seq"), int), "event.seq must be an integer")
        _require(raw.get("type") in EVENT_TYPES, f"unknown event type {raw.get('type')!r}")
        data = raw.get("data") or {}
        _require(isinstance(data, dict), "event.data must be an object")
        return cls(seq=raw["seq"], type=raw["type"], data=data, ts=float(raw.get("ts", 0.0)))

    @property
    def terminal(self) -> bool:
        return self.type == JOB_STATUS and self.data.get("status") in TERMINAL_STATUSES
