"""The http backend's event stream: a dropped stream resumes where it stopped."""

from __future__ import annotations

import json

import httpx

from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.protocol import Event


def sse(events: list[Event]) -> bytes:
    return b"".join(f"id: {e.seq}\ndata: {json.dumps(e.to_dict())}\n\n".encode()
                    for e in events)


async def test_a_dropped_stream_resumes_after_the_last_event() -> None:
    log = [Event(1, "execution_start", {}, 1.0), Event(2, "executing", {"node": "1"}, 1.0),
           Event(3, "executed", {"node": "1", "output": {}}, 1.0),
           Event(4, "job_status", {"status": "completed"}, 1.0)]
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after"])
        asked.append(after)
        # The first connection drops after two events (a proxy cut, a restart...).
        chunk = log[after:2] if not asked[:-1] else log[after:]
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                              content=sse(chunk))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    backend = HttpBackend("http://worker", "t", client)
    got = [event.seq async for event in backend.events("job")]
    await client.aclose()
    assert got == [1, 2, 3, 4], "no gap and no duplicate"
    assert asked == [0, 2]
