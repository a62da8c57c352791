"""What the GPU container tells the API about a job, through a `modal.Queue` partition.

The partition is the job's id. Items are plain JSON-able dicts (Modal pickles
queue items; dicts keep the two sides free to be upgraded apart):

- `{"k": "event", "type", "data"}`: one of the run's typed payloads, in the
  wire shape `protocol.events` defines (`payload.to_data()`), without a seq:
  the API's `EventLog` numbers them;
- `{"k": "start"}`: ComfyUI started the prompt (the lifecycle's queued → running);
- `{"k": "end", "status", "error"}`: the one end, the error as the error
  family's dict; nothing of the job follows it;
- `{"k": "poke"}`: from the API to itself (after a cancel), so a reader blocked
  on the partition looks at the GPU call at once.

A Modal queue item holds at most 1 MiB; `fit` shrinks a preview frame that
would not fit (a JPEG of at most 512 px), as the RunPod handler does for its
stream chunks.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from ...errors import RemoteExecError
from ...protocol import Payload, Preview, Unknown, payload_from

ITEM_LIMIT = 1024 * 1024  # Modal: "each item can be up to 1 MiB"
ITEM_BUDGET = ITEM_LIMIT - 64 * 1024  # room for pickling's own bytes
PREVIEW_EDGE = 512

EVENT, START, END, POKE = "event", "start", "end", "poke"


def event_item(payload: Payload) -> dict[str, Any]:
    kind = payload.type if isinstance(payload, Unknown) else payload.TYPE
    return {"k": EVENT, "type": kind, "data": payload.to_data()}


def start_item(cold_start: tuple[float, float] | None = None) -> dict[str, Any]:
    """`cold_start`: the container's (start, ComfyUI ready) span, sent with the first
    job it runs (`protocol.timing`)."""
    item: dict[str, Any] = {"k": START}
    if cold_start is not None:
        item["cold_start"] = list(cold_start)
    return item


def end_item(status: str, error: RemoteExecError | None) -> dict[str, Any]:
    return {"k": END, "status": status, "error": error.to_dict() if error else None}


def poke_item() -> dict[str, Any]:
    return {"k": POKE}


@dataclass(frozen=True)
class Message:
    kind: str
    payload: Payload | None = None
    status: str | None = None
    error: RemoteExecError | None = None
    cold_start: tuple[float, float] | None = None


def parse(item: Any) -> Message:
    """One queue item; an item this side cannot read is an `Unknown` event, never an
    exception, so one odd item cannot stop a job's relay."""
    if not isinstance(item, dict):
        return Message(EVENT, Unknown("remote_exec.bad_item", {"item": repr(item)[:200]}))
    kind = item.get("k")
    if kind == EVENT:
        data = item.get("data")
        try:
            return Message(EVENT, payload_from(str(item.get("type") or ""),
                                               data if isinstance(data, dict) else {}))
        except RemoteExecError as exc:
            return Message(EVENT, Unknown("remote_exec.bad_item", {"error": exc.message}))
    if kind == END:
        error = item.get("error")
        return Message(END, status=str(item.get("status") or "failed"),
                       error=RemoteExecError.from_dict(error) if isinstance(error, dict)
                       else None)
    if kind == START:
        span = item.get("cold_start")
        if (isinstance(span, list) and len(span) == 2
                and all(isinstance(v, (int, float)) for v in span)):
            return Message(START, cold_start=(float(span[0]), float(span[1])))
        return Message(START)
    if kind == POKE:
        return Message(str(kind))
    return Message(EVENT, Unknown("remote_exec.bad_item", {"item": repr(item)[:200]}))


def item_size(item: dict[str, Any]) -> int:
    """The item's size on the wire, near enough (its JSON)."""
    return len(json.dumps(item, separators=(",", ":")))


def fit(payload: Payload) -> Payload:
    """A payload whose item fits in a queue item: previews are shrunk when needed."""
    if not isinstance(payload, Preview) or item_size(event_item(payload)) <= ITEM_BUDGET:
        return payload
    from PIL import Image  # only for a frame over the limit

    with Image.open(io.BytesIO(payload.image)) as img:
        img.thumbnail((PREVIEW_EDGE, PREVIEW_EDGE))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=70)
    payload.image, payload.image_type = buf.getvalue(), "image/jpeg"
    return payload
