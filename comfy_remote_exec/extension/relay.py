"""Turn wire events back into the messages a local ComfyUI would have sent.

Pure functions. The local `prompt_id` is put back into every message (and
into each node state of `progress_state`), and node ids are untouched, so the
stock frontend highlights the right nodes. Preview frames are rebuilt in the
format the receiving client negotiated (see `Host.send_preview`): with
metadata when it declared `supports_preview_metadata`, else the legacy one.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from ..protocol import JOB_STATUS, PREVIEW, Event

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


def preview_parts(data: dict[str, Any], prompt_id: str
                  ) -> tuple[bytes, str, dict[str, Any]]:
    """`(image bytes, mime type, ComfyUI preview metadata)` of a wire preview."""
    image = base64.b64decode(data.get("image") or "")
    image_type = str(data.get("image_type") or "image/jpeg")
    meta = {
        "node_id": data.get("node"), "prompt_id": prompt_id,
        "display_node_id": data.get("display_node") or data.get("node"),
        "parent_node_id": data.get("parent_node"),
        "real_node_id": data.get("real_node") or data.get("node"),
    }
    return image, image_type, meta


def legacy_preview(image: bytes, image_type: str) -> bytes:
    """The legacy preview payload (type 1): a 4-byte image format, then the image."""
    return struct.pack(">I", 2 if image_type == "image/png" else 1) + image


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
