"""The worker's ComfyUI side without a ComfyUI: event translation, output description."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from comfy_remote_exec.errors import BadRequest
from comfy_remote_exec.protocol import Preview, Progress
from comfy_remote_exec.worker.comfy.comfy_client import translate
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs, describe

# -- events ----------------------------------------------------------------------------


def test_text_events_drop_prompt_id_and_keep_node_ids() -> None:
    msg = translate(json.dumps({"type": "progress", "data": {
        "value": 2, "max": 9, "prompt_id": "p", "node": "3"}}))
    assert msg is not None
    assert msg.prompt_id == "p" and msg.payload == Progress(2, 9, "3")
    assert translate(json.dumps({"type": "status", "data": {}})) is None
    assert translate("not json") is None


def test_preview_with_metadata_frame() -> None:
    meta = json.dumps({"node_id": "7", "prompt_id": "p", "display_node_id": "7",
                       "image_type": "image/png"}).encode()
    frame = struct.pack(">II", 4, len(meta)) + meta + b"\x89PNGdata"
    msg = translate(frame)
    assert msg is not None and msg.prompt_id == "p" and isinstance(msg.payload, Preview)
    assert msg.payload.node == "7" and msg.payload.image_type == "image/png"
    assert msg.payload.image == b"\x89PNGdata"


def test_legacy_preview_frame() -> None:
    msg = translate(struct.pack(">II", 1, 1) + b"\xff\xd8jpeg")
    assert msg is not None and msg.prompt_id is None
    assert isinstance(msg.payload, Preview) and msg.payload.image_type == "image/jpeg"


# -- outputs ---------------------------------------------------------------------------


def test_describe_confines_and_hashes(tmp_path: Path) -> None:
    dirs = ComfyDirs(tmp_path)
    (dirs.output / "sub").mkdir(parents=True)
    (dirs.output / "sub" / "a.png").write_bytes(b"png")
    (tmp_path / "secret").write_bytes(b"s")
    ui = {"images": [{"filename": "a.png", "subfolder": "sub", "type": "output"}],
          "animated": [True], "text": ["hi"]}
    [out] = describe(dirs, "9", ui, "/v1/jobs/j/outputs")
    assert (out.key, out.folder, out.type, out.size_bytes) == ("images", "output", "image", 3)
    assert out.sha256 == hashlib.sha256(b"png").hexdigest()
    assert out.url == "/v1/jobs/j/outputs/output/sub/a.png"
    with pytest.raises(BadRequest):
        describe(dirs, "9", {"x": [{"filename": "../secret", "type": "output"}]})
