"""Wire protocol v1: parsing, limits and hostile names, without ComfyUI."""

from __future__ import annotations

import base64

import pytest

from comfy_remote_exec.errors import BadRequest, PayloadTooLarge, RemoteExecError
from comfy_remote_exec.protocol import (
    MAX_MEDIA_ITEMS,
    PROTOCOL_VERSION,
    Event,
    JobSpec,
    OutputFile,
    decode_base64,
    safe_relpath,
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


def test_event_round_trip_and_version_check() -> None:
    event = Event(4, "progress", {"node": "3", "value": 1, "max": 9}, 1.5)
    assert Event.parse(event.to_dict()) == event
    with pytest.raises(BadRequest, match="not supported"):
        Event.parse(event.to_dict() | {"v": PROTOCOL_VERSION + 1})
    with pytest.raises(BadRequest, match="unknown event type"):
        Event.parse(event.to_dict() | {"type": "evil"})
    assert Event(9, "job_status", {"status": "failed"}, 0).terminal


@pytest.mark.parametrize("raw", [
    {"filename": "../../x.png", "subfolder": "", "type": "output", "sha256": SHA},
    {"filename": "a/b.png", "subfolder": "", "type": "output", "sha256": SHA},
    {"filename": "x.png", "subfolder": "../..", "type": "output", "sha256": SHA},
    {"filename": "x.png", "subfolder": "", "type": "/etc", "sha256": SHA},
    {"filename": "x.png", "subfolder": "", "type": "output", "sha256": "nope"},
])
def test_output_descriptors_from_the_other_side_are_checked(raw: dict) -> None:
    with pytest.raises(BadRequest):
        OutputFile.parse(raw)


def test_output_descriptor_round_trip() -> None:
    out = OutputFile(node_id="9", key="images", filename="a.png", subfolder="s/t",
                     type="temp", kind="image", size=3, sha256=SHA, url="/u")
    assert out.preview and out.relpath == "s/t/a.png"
    assert OutputFile.parse(out.to_dict()) == out


def test_errors_carry_data_both_ways() -> None:
    err = RemoteExecError("boom", code="execution_error", job_id="j", node_id="3",
                          retryable=True, log_tail=["last line"])
    again = RemoteExecError.from_dict(err.to_dict(), status=502)
    assert (again.code, again.job_id, again.node_id, again.retryable, again.status,
            again.log_tail) == ("execution_error", "j", "3", True, 502, ["last line"])
    assert str(again) == "boom (node 3)"
