"""The http backend: a dropped stream resumes where it stopped; the protocol is named."""

from __future__ import annotations

import json

import httpx

from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.protocol import (
    PROTOCOL_HEADER,
    Event,
    Executed,
    Executing,
    ExecutionStart,
    JobStatus,
    Unknown,
)


def sse(events: list[Event]) -> bytes:
    return b"".join(f"id: {e.seq}\ndata: {json.dumps(e.to_wire())}\n\n".encode()
                    for e in events)


async def test_a_dropped_stream_resumes_after_the_last_event() -> None:
    log = [Event(1, ExecutionStart(), 1.0), Event(2, Executing("1"), 1.0),
           Event(3, Unknown("from_a_newer_worker", {"x": [1]}), 1.0),
           Event(4, Executed("1", "1", {}), 1.0), Event(5, JobStatus("completed"), 1.0)]
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers[PROTOCOL_HEADER] == "2"
        after = int(request.url.params["after"])
        asked.append(after)
        # The first connection drops after two events (a proxy cut, a restart...).
        chunk = log[after:2] if not asked[:-1] else log[after:]
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                              content=sse(chunk))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    backend = HttpBackend("http://worker", "t", client)
    got = [event async for event in backend.events("job")]
    await client.aclose()
    assert got == log, "no gap and no duplicate; the unknown event passes through"
    assert asked == [0, 2]
