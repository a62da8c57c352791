"""Turn wire events back into the messages a local ComfyUI would have sent.

Pure functions. The local `prompt_id` is put back into every message (and
into each node state of `progress_state`), and node ids are untouched, so the
stock frontend highlights the right nodes. Preview frames are rebuilt in the
binary format the receiving client negotiated: the metadata format (type 4)
when it declared `supports_preview_metadata`, else the legacy one (type 1).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

from ..protocol import JOB_STATUS, PREVIEW, Event

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
# The events ComfyUI stamps with a millisecond `timestamp`.
STAMPED = frozenset({"execution_start", "execution_cached", "execution_success",
                     "execution_error", "execution_interrupted"})
# The events ComfyUI keeps in a history entry's `status.messages`.
HISTORY_MESSAGES = STAMPED


def now_ms() -> int:
    return int(time.time() * 1000)


def comfy_message(event: Event, prompt_id: str) -> tuple[str, dict[str, Any]] | None:
    """The ComfyUI WebSocket message for a wire event; None for our own event types."""
    if event.type in (PREVIEW, JOB_STATUS):
        return None
    data = {k: v for k, v in event.data.items() if k != "files"}
    data["prompt_id"] = prompt_id
    if event.type in STAMPED:
        data["timestamp"] = int(event.ts * 1000) if event.ts else now_ms()
    if event.type == "progress_state":
        data["nodes"] = {nid: {**state, "prompt_id": prompt_id}
                         for nid, state in (data.get("nodes") or {}).items()}
    return event.type, data


def preview_frame(data: dict[str, Any], prompt_id: str, with_metadata: bool
                  ) -> tuple[int, bytes]:
    """`(binary event type, payload)` for a preview, without ComfyUI's 4-byte event prefix."""
    image = base64.b64decode(data.get("image") or "")
    image_type = str(data.get("image_type") or "image/jpeg")
    if with_metadata:
        meta = json.dumps({
            "node_id": data.get("node"), "prompt_id": prompt_id,
            "display_node_id": data.get("display_node") or data.get("node"),
            "parent_node_id": data.get("parent_node"),
            "real_node_id": data.get("real_node") or data.get("node"),
            "image_type": image_type,
        }).encode()
        return PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(meta)) + meta + image
    legacy_type = 2 if image_type == "image/png" else 1
    return PREVIEW_IMAGE, struct.pack(">I", legacy_type) + image


def error_message(prompt_id: str, error: dict[str, Any], executed: list[str]
                  ) -> dict[str, Any]:
    """An `execution_error` for a failure that has no ComfyUI error event of its own
    (the remote refused the job, crashed, or could not be reached)."""
    tail = error.get("log_tail") or []
    return {
        "prompt_id": prompt_id, "timestamp": now_ms(),
        "node_id": error.get("node_id") or "", "node_type": error.get("node_type") or "",
        "executed": executed,
        "exception_message": f"[remote] {error.get('message') or 'the remote job failed'}",
        "exception_type": f"RemoteExec.{error.get('code') or 'error'}",
        "traceback": [f"{line}\n" for line in tail[-20:]],
        "current_inputs": {}, "current_outputs": [],
    }
