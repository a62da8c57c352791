"""Turn ComfyUI WebSocket messages into wire events.

Pure functions: a raw message in, `(prompt_id, type, data)` out, or None for
messages that belong to no job (queue `status`, `feature_flags`, crystools
monitors and the like). `prompt_id` is dropped from the data, since the job id
identifies the stream; node ids are kept as ComfyUI sent them.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from ...protocol import COMFY_EVENTS, PREVIEW

# ComfyUI's protocol.BinaryEventTypes
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_LEGACY_IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}


@dataclass
class Translated:
    prompt_id: str | None
    type: str
    data: dict[str, Any]


def translate_text(raw: str) -> Translated | None:
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    kind, data = msg.get("type"), msg.get("data")
    if kind not in COMFY_EVENTS or not isinstance(data, dict):
        return None
    data = dict(data)
    prompt_id = data.pop("prompt_id", None)
    data.pop("timestamp", None)
    if kind == "progress_state":
        nodes = data.get("nodes") or {}
        data["nodes"] = {nid: {k: v for k, v in st.items() if k != "prompt_id"}
                         for nid, st in nodes.items() if isinstance(st, dict)}
    return Translated(prompt_id if isinstance(prompt_id, str) else None, kind, data)


def translate_binary(raw: bytes) -> Translated | None:
    """Decode a binary preview frame. Other binary events are ignored."""
    if len(raw) < 8:
        return None
    (event,) = struct.unpack(">I", raw[:4])
    if event == PREVIEW_IMAGE:
        (image_type,) = struct.unpack(">I", raw[4:8])
        meta: dict[str, Any] = {"image_type": _LEGACY_IMAGE_TYPES.get(image_type, "image/jpeg")}
        image = raw[8:]
        prompt_id = None
    elif event == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", raw[4:8])
        try:
            meta = json.loads(raw[8:8 + length])
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        image = raw[8 + length:]
        prompt_id = meta.pop("prompt_id", None)
    else:
        return None
    data = {
        "node": meta.get("node_id"),
        "display_node": meta.get("display_node_id"),
        "parent_node": meta.get("parent_node_id"),
        "real_node": meta.get("real_node_id"),
        "image_type": meta.get("image_type", "image/jpeg"),
        "image": base64.b64encode(image).decode("ascii"),
    }
    return Translated(prompt_id, PREVIEW, data)


def translate(raw: str | bytes) -> Translated | None:
    if isinstance(raw, (bytes, bytearray)):
        return translate_binary(bytes(raw))
    return translate_text(raw)
