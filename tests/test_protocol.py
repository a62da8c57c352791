"""Wire protocol v2: typed events, versions, chunks, parsing, limits and hostile names."""

from __future__ import annotations

import base64
import json

import pytest

from comfy_remote_exec.errors import BadRequest, PayloadTooLarge, RemoteExecError
from comfy_remote_exec.protocol import (
    CANCELLED,
    COMFY_EVENTS,
    COMPLETED,
    FAILED,
    MAX_MEDIA_ITEMS,
    PAYLOADS,
    PROTOCOL_VERSION,
    RUNNING,
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    JobSpec,
    JobStatus,
    Lifecycle,
    LifecycleError,
    NodeProgress,
    OutputFile,
    Preview,
    Progress,
    ProgressState,
    ProtocolMismatch,
    Unknown,
    check_version,
    decode_base64,
    media_type,
    safe_relpath,
)
from comfy_remote_exec.protocol.runpod import (
    ErrorChunk,
    EventsChunk,
    FilePart,
    decode_error,
    parse_chunk,
)

FLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
SHA = "a" * 64


@pytest.mark.parametrize("name,expected", [("x.png", "x.png"), ("sub/x.png", "sub/x.png"),
                                           ("sub\\x.png", "sub/x.png")])
def test_safe_relpath_accepts(name: str, expected: str) -> None:
    assert safe_relpath(name) == expected


@pytest.mark.parametrize("name", ["", "../x", "a/../../x", "/etc/passwd", "C:\\x", "c:x",
                                  "a//b", "./x", "x\x00y", "x\ny", "a" * 2000, None, 7])
def test_safe_relpath_refuses(name: object) -> None:
    with pytest.raises(BadRequest) as info:
        safe_relpath(name)
    assert info.value.code == "unsafe_name" and info.value.status == 400


def test_decode_base64_strict_and_data_urls() -> None:
    assert decode_base64(base64.b64encode(b"hi").decode(), what="x") == b"hi"
    assert decode_base64("data:image/png;base64," + base64.b64encode(b"hi").decode(),
                         what="x") == b"hi"
    with pytest.raises(BadRequest, match="not valid base64"):
        decode_base64("@@@@", what="x")
    with pytest.raises(PayloadTooLarge):
        decode_base64(base64.b64encode(b"x" * 100).decode(), what="x", limit=10)


def test_job_spec_parses_full_body() -> None:
    spec = JobSpec.parse({
        "workflow": FLOW, "priority": 3, "user_id": "u", "webhook_url": "https://h/x",
        "media": [{"name": "a.png", "data": "aGk="}, {"name": "s/b.png", "sha256": SHA},
                  {"name": "c.png", "url": "https://example.com/c.png"}],
        "inputs": [{"node": 1, "field": "width", "value": 16}],
        "partial_execution_targets": ["1"]})
    assert spec.priority == 3 and spec.inputs[0].node == "1"
    assert [m.name for m in spec.media] == ["a.png", "s/b.png", "c.png"]
    assert spec.to_dict()["workflow"] == FLOW


@pytest.mark.parametrize("body,fragment", [
    ([], "must be an object"), ({}, "'workflow' is required"),
    ({"workflow": []}, "non-empty object"),
    ({"workflow": {"1": {"inputs": {}}}}, "class_type"),
    ({"workflow": FLOW, "media": [{"name": "a.png"}]}, "exactly one of"),
    ({"workflow": FLOW, "media": [{"name": "a.png", "data": "x", "url": "y"}]}, "exactly one"),
    ({"workflow": FLOW, "media": [{"name": "a.png", "sha256": "abc"}]}, "64 lowercase hex"),
    ({"workflow": FLOW, "media": [{"name": "a", "data": "x"}, {"name": "a", "data": "y"}]},
     "unique"),
    ({"workflow": FLOW, "inputs": [{"node": "1", "value": 1}]}, "field is required"),
    ({"workflow": FLOW, "inputs": [{"node": "1", "field": "f", "value": 1, "type": "x"}]},
     "type must be"),
    ({"workflow": FLOW, "priority": "high"}, "integer"),
])
def test_job_spec_refuses(body: object, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        JobSpec.parse(body)


def test_too_many_media_is_413() -> None:
    media = [{"name": f"{i}.png", "data": "aGk="} for i in range(MAX_MEDIA_ITEMS + 1)]
    with pytest.raises(PayloadTooLarge):
        JobSpec.parse({"workflow": FLOW, "media": media})


EVENTS = [
    ExecutionStart(), ExecutionCached(["1", "2"]), Executing("3", "3"), Executing(None),
    Progress(1, 9, "3"), ProgressState({"3": NodeProgress(1, 9, "running", "3", "3")}),
    Executed("3", "3", {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
             [OutputFile(node_id="3", key="images", filename="a.png", subfolder="",
                         folder="output", type="image", size_bytes=3, sha256=SHA)]),
    ExecutionSuccess(), ExecutionInterrupted("3", "X", ["1"]),
    ExecutionError("3", "X", ["1"], "boom", "ValueError", ["tb\n"], {"a": 1}, []),
    Preview(b"\x89PNG", "image/png", "7", "7"),
    JobStatus("failed", RemoteExecError("boom", code="execution_error", node_id="3",
                                        log_tail=["last"])),
]


@pytest.mark.parametrize("payload", EVENTS, ids=lambda p: type(p).__name__)
def test_every_event_type_round_trips_typed(payload: object) -> None:
    event = Event(4, payload, 1.5)  # type: ignore[arg-type]
    wire = json.loads(json.dumps(event.to_wire()))
    assert wire["v"] == PROTOCOL_VERSION and wire["type"] == event.type
    again = Event.parse(wire)
    if isinstance(payload, JobStatus):  # errors are compared by their data
        assert isinstance(again.payload, JobStatus) and again.payload.error is not None
        assert again.payload.error.to_dict() == payload.error.to_dict()  # type: ignore[union-attr]
    else:
        assert again == event


def test_every_event_type_has_a_payload_class() -> None:
    assert set(PAYLOADS) == {*COMFY_EVENTS, "preview", "job_status"}


def test_comfyui_keys_a_payload_does_not_name_are_kept() -> None:
    raw = {"v": 2, "seq": 1, "type": "executing",
           "data": {"node": "3", "display_node": "3", "new_in_comfyui_9": [1]}}
    event = Event.parse(raw)
    assert event.to_wire()["data"] == raw["data"]


def test_unknown_event_types_pass_through_untouched() -> None:
    raw = {"v": 2, "seq": 7, "type": "cost_report", "data": {"usd": 0.01, "gpu": "A100"},
           "ts": 2.0}
    event = Event.parse(raw)
    assert isinstance(event.payload, Unknown) and event.type == "cost_report"
    assert not event.terminal
    assert event.to_wire() == raw


def test_protocol_versions_are_checked_both_ways() -> None:
    wire = Event(1, ExecutionStart(), 0).to_wire()
    with pytest.raises(ProtocolMismatch, match="update this side") as newer:
        Event.parse(wire | {"v": PROTOCOL_VERSION + 1})
    assert newer.value.code == "protocol_mismatch" and newer.value.status == 400
    with pytest.raises(ProtocolMismatch, match="update the worker"):
        Event.parse(wire | {"v": 1})
    with pytest.raises(ProtocolMismatch, match="update the client"):
        check_version(1, peer="client")
    check_version(PROTOCOL_VERSION, peer="client")
    # Across a wire, the error comes back as the class its code names.
    again = RemoteExecError.from_dict(newer.value.to_dict())
    assert isinstance(again, ProtocolMismatch) and again.details == newer.value.details


def test_runpod_chunks_round_trip() -> None:
    events = EventsChunk([Event(1, ExecutionStart(), 0), Event(2, Unknown("x", {"a": 1}), 0)])
    assert parse_chunk(json.loads(json.dumps(events.to_wire()))) == events
    part = FilePart(SHA, 2, b"bytes")
    assert parse_chunk(part.to_wire()) == part
    err = RemoteExecError("boom", code="execution_error", log_tail=["t"])
    chunk = parse_chunk(ErrorChunk(err).to_wire())
    assert isinstance(chunk, ErrorChunk) and chunk.error.to_dict() == err.to_dict()
    assert parse_chunk({"progress": 3}) is None
    assert decode_error('{"error_message": "sdk said"}').message == "sdk said"
    assert decode_error("plain words").code == "runpod_failed"


def test_lifecycle_ends_once_and_refuses_bad_moves() -> None:
    life = Lifecycle()
    assert life.request_cancel() and life.cancel_requested
    assert life.start() and not life.start() and life.status == RUNNING
    assert life.end(CANCELLED) and not life.end(FAILED, RemoteExecError("late"))
    assert life.status == CANCELLED and life.error is None and not life.request_cancel()
    with pytest.raises(LifecycleError):
        Lifecycle().end(RUNNING)
    with pytest.raises(LifecycleError):
        Lifecycle().end(COMPLETED, RemoteExecError("no"))
    assert Lifecycle().end(FAILED) and Lifecycle().start()


@pytest.mark.parametrize("raw", [
    {"filename": "../../x.png", "subfolder": "", "folder": "output", "sha256": SHA},
    {"filename": "a/b.png", "subfolder": "", "folder": "output", "sha256": SHA},
    {"filename": "x.png", "subfolder": "../..", "folder": "output", "sha256": SHA},
    {"filename": "x.png", "subfolder": "", "folder": "/etc", "sha256": SHA},
    {"filename": "x.png", "subfolder": "", "folder": "output", "sha256": "nope"},
    {"filename": "x.png", "subfolder": "", "folder": "output", "sha256": SHA, "parts": 0},
])
def test_output_descriptors_from_the_other_side_are_checked(raw: dict) -> None:
    with pytest.raises(BadRequest):
        OutputFile.parse(raw)


def test_output_descriptor_round_trip_and_media_types() -> None:
    out = OutputFile(node_id="9", key="images", filename="a.png", subfolder="s/t",
                     folder="temp", type="image", size_bytes=3, sha256=SHA, url="/u")
    assert out.preview and out.relpath == "s/t/a.png"
    assert OutputFile.parse(out.to_dict()) == out
    assert [media_type(n) for n in ("a.PNG", "b.gif", "c.mp4", "d.flac", "e.txt", "f.json",
                                    "g.bin")] == ["image", "gif", "video", "audio", "text",
                                                  "json", "file"]


def test_errors_carry_data_both_ways() -> None:
    err = RemoteExecError("boom", code="execution_error", job_id="j", node_id="3",
                          retryable=True, log_tail=["last line"])
    again = RemoteExecError.from_dict(err.to_dict(), status=502)
    assert (again.code, again.job_id, again.node_id, again.retryable, again.status,
            again.log_tail) == ("execution_error", "j", "3", True, 502, ["last line"])
    assert str(again) == "boom (node 3)"
