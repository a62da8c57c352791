"""Webhook delivery with retry and exponential backoff.

The body is the one the job API's existing clients read
(`shared/specs/job-apis.md`): `{"event": "job.completed" | "job.failed",
"job_id", "timestamp"}`, the time ISO 8601 in UTC, and no outputs. A cancelled
job is `job.failed` for them, since they know no other ending; our fields
beside say what happened: `status` (a cancel shows as `failed`, like the job
API's views), `cancelled`, `error` (the message), `error_details` (the error
family's dict), `prompt_id` and `user_id`.

Deliveries run in the background so a slow receiver never holds up a job.
A delivery succeeds on any 2xx; 4xx other than 408/429 is final, everything
else (5xx, timeouts, refused connections) is retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import backoff
import httpx

from ..inputs.urls import post_json

log = logging.getLogger(__name__)
_RETRY = object()  # an attempt's answer that asks for another (5xx, 408, 429, no answer)
CANCELLED_BY_USER = "Cancelled by user"  # a cancelled job's error, as old clients know it


def utc_iso(ts: float) -> str:
    """A Unix time as ISO 8601 in UTC, e.g. `2025-01-31T12:00:00.123+00:00`."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def webhook_body(event: str, job: dict[str, Any]) -> dict[str, Any]:
    """The POSTed body for `event` (`job.<status>`) from the job's record view
    (`Job.view`: its `error` is the error family's dict)."""
    cancelled = event == "job.cancelled"
    error = job.get("error") if isinstance(job.get("error"), dict) else None
    if cancelled:
        error = {"code": "cancelled", "message": CANCELLED_BY_USER, "retryable": False}
    finished = job.get("finished_at")
    return {
        "event": "job.failed" if cancelled else event, "job_id": job.get("job_id"),
        "timestamp": utc_iso(finished if isinstance(finished, (int, float)) else time.time()),
        "status": "failed" if cancelled else job.get("status"), "cancelled": cancelled,
        "error": error["message"] if error else None, "error_details": error,
        "prompt_id": job.get("prompt_id"), "user_id": job.get("user_id"),
    }


class WebhookSender:
    def __init__(self, http: httpx.AsyncClient, *, allow_private: bool = False,
                 attempts: int = 5, base_delay: float = 0.5) -> None:
        self.http = http
        self.allow_private = allow_private
        self.attempts = attempts
        self.base_delay = base_delay
        self._tasks: set[asyncio.Task[bool]] = set()

    def send(self, url: str, event: str, job: dict[str, Any]) -> asyncio.Task[bool]:
        """Deliver `event` about `job` (its `Job.view`) in the background."""
        payload = webhook_body(event, job)
        task = asyncio.get_running_loop().create_task(self.deliver(url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def deliver(self, url: str, payload: dict[str, Any]) -> bool:
        """POST with exponential backoff (the `backoff` library); True once a 2xx lands."""
        event = payload["event"]

        @backoff.on_predicate(backoff.expo, lambda retry: retry is _RETRY,
                              max_tries=self.attempts, factor=self.base_delay, jitter=None,
                              on_giveup=lambda _: log.warning(
                                  "webhook %s gave up after %d attempts", event, self.attempts))
        async def attempt() -> bool | object:
            try:
                resp = await post_json(self.http, url, payload,
                                       allow_private=self.allow_private)
            except Exception as exc:
                log.info("webhook %s attempt failed: %s", event, exc)
                return _RETRY
            if resp.is_success:
                return True
            if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                log.warning("webhook %s refused with %s", event, resp.status_code)
                return False
            return _RETRY

        return await attempt() is True

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
