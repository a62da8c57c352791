"""Webhook delivery with retry and exponential backoff.

Deliveries run in the background so a slow receiver never holds up a job.
A delivery succeeds on any 2xx; 4xx other than 408/429 is final, everything
else (5xx, timeouts, refused connections) is retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import backoff
import httpx

from ..inputs.urls import post_json

log = logging.getLogger(__name__)
_RETRY = object()  # an attempt's answer that asks for another (5xx, 408, 429, no answer)


class WebhookSender:
    def __init__(self, http: httpx.AsyncClient, *, allow_private: bool = False,
                 attempts: int = 5, base_delay: float = 0.5) -> None:
        self.http = http
        self.allow_private = allow_private
        self.attempts = attempts
        self.base_delay = base_delay
        self._tasks: set[asyncio.Task[bool]] = set()

    def send(self, url: str, event: str, job: dict[str, Any]) -> asyncio.Task[bool]:
        payload = {"event": event, "job": job, "sent_at": time.time()}
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
