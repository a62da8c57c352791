"""In-memory stand-ins on `httpx.MockTransport`: RunPod's endpoint API, the worker's job API.

`FakeRunpod` serves `/run`, `/stream`, `/status`, `/cancel` from what a test
puts in it (a job's stream items, its status, an answer to a blobs op) and
records every job input and upload. `FakeJobApi` serves the worker's job API
to the handler: a job id, the blobs it lacks, and a fixed SSE event stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from comfy_remote_exec.protocol import Event, JsonObject


def sse(events: list[Event]) -> str:
    return "".join(f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps(e.to_wire())}\n\n"
                   for e in events)


@dataclass
class FakeRunpod:
    """RunPod's endpoint API, for one backend: jobs' streams are set by the test."""

    streams: dict[str, list[Any]] = field(default_factory=dict)  # job id -> outputs
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs_answer: dict[str, Any] = field(default_factory=lambda: {"missing": [], "uploads": {}})
    inputs: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    downloads: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport())

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        if request.method == "PUT":
            self.uploads[str(request.url)] = request.read()
            return httpx.Response(200)
        if str(request.url) in self.downloads:
            return httpx.Response(200, content=self.downloads[str(request.url)])
        route, _, job_id = path.rpartition("/")
        if path.endswith("/run"):
            body = json.loads(request.content)
            self.inputs.append(body["input"])
            job_id = f"job-{len(self.inputs)}"
            if body["input"].get("op") == "blobs":
                self.statuses[job_id] = {"status": "COMPLETED", "output": [self.blobs_answer]}
            return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})
        if route.endswith("/stream"):
            items = [{"output": o} for o in self.streams.pop(job_id, [])]
            status = self.statuses.get(job_id, {"status": "COMPLETED"})["status"]
            return httpx.Response(200, json={"status": status, "stream": items})
        if route.endswith("/status"):
            return httpx.Response(200, json=self.statuses.get(job_id, {"status": "COMPLETED"}))
        if route.endswith("/cancel"):
            return httpx.Response(200, json={"id": job_id, "status": "CANCELLED"})
        return httpx.Response(404, json={"error": "no such route"})


@dataclass
class FakeJobApi:
    """The worker's job API as the handler sees it: one job, a fixed event stream."""

    events: list[Event]
    missing: list[str] = field(default_factory=list)
    submitted: list[JsonObject] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    on_request: Callable[[httpx.Request], None] | None = None

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/blobs/missing":
            wanted = json.loads(request.content)["sha256"]
            return httpx.Response(200, json={"missing": [h for h in wanted
                                                         if h in self.missing]})
        if path == "/v1/jobs" and request.method == "POST":
            self.submitted.append(json.loads(request.content))
            return httpx.Response(202, json={"job_id": "w1", "status": "queued"})
        if path == "/v1/jobs/w1/events":
            return httpx.Response(200, text=sse(self.events),
                                  headers={"Content-Type": "text/event-stream"})
        if path == "/v1/jobs/w1" and request.method == "DELETE":
            self.cancelled.append("w1")
            return httpx.Response(200, json={"job_id": "w1", "status": "failed", "cancelled": True,
                                             "error": "Cancelled by user"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})
