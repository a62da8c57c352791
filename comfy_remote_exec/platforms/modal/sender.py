"""The GPU container's side of a job's events: the runner's sink, sending to the queue.

`GpuSink` is what the runner feeds in the GPU container (`RunSink`: each
typed event, and `changed()` when the lifecycle moved), as the job record is
in the worker. It never waits on the network: it hands each message to a
`QueueSender`, whose task sends them in order through the job's partition,
batched (`put_many`) when they come faster than a round trip. Before a batch
holding an `executed` event leaves, the files it names are copied into the
job's folder on the data volume and committed (`publish`), so the API can
serve each file as soon as a client hears of it.

A partition holds at most 5,000 items; when the API does not drain it (an API
container restarting), `put_many` waits up to `put_timeout` and then preview
frames and progress are dropped, never the events that change a job's
outcome. Preview frames are also dropped while more than `backlog` messages
wait in the container.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol import RUNNING, Executed, Lifecycle, OutputFile, Payload, Preview
from . import messages

log = logging.getLogger(__name__)

PUT_TIMEOUT = 60.0
BACKLOG = 500
BATCH_ITEMS = 64
BATCH_BYTES = 4 * 1024 * 1024
DROPPABLE = frozenset({"preview", "progress", "progress_state"})

Publish = Callable[[list[OutputFile]], Awaitable[None]]
Entry = tuple[dict[str, Any], list[OutputFile]]


def _size(item: dict[str, Any]) -> int:
    return messages.item_size(item) if item.get("type") == "preview" else 2048


class QueueSender:
    def __init__(self, events: Any, job_id: str, publish: Publish, *,
                 put_timeout: float = PUT_TIMEOUT, backlog: int = BACKLOG) -> None:
        self.events = events
        self.job_id = job_id
        self.publish = publish
        self.put_timeout = put_timeout
        self.backlog = backlog
        self.sent = 0
        self._pending: asyncio.Queue[Entry | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"modal-sender-{job_id}")

    def send(self, item: dict[str, Any], files: list[OutputFile] | None = None) -> None:
        if item.get("type") == "preview" and self._pending.qsize() > self.backlog:
            return
        self._pending.put_nowait((item, files or []))

    async def close(self) -> None:
        """Send what is pending, then stop."""
        self._pending.put_nowait(None)
        await self._task

    async def _run(self) -> None:
        done = False
        while not done:
            first = await self._pending.get()
            if first is None:
                return
            batch, size = [first], _size(first[0])
            while len(batch) < BATCH_ITEMS and size < BATCH_BYTES and not self._pending.empty():
                entry = self._pending.get_nowait()
                if entry is None:
                    done = True
                    break
                batch.append(entry)
                size += _size(entry[0])
            files = [f for _, fs in batch for f in fs]
            try:
                if files:
                    await self.publish(files)
                await self._put([item for item, _ in batch])
            except Exception:  # keep the job going: its end also comes back as the result
                log.exception("job %s: sending %d events failed", self.job_id, len(batch))

    async def _put(self, items: list[dict[str, Any]]) -> None:
        while items:
            try:
                await self.events.put_many.aio(items, block=True, timeout=self.put_timeout,
                                               partition=self.job_id)
                self.sent += len(items)
                return
            except queue.Full:
                kept = [i for i in items if i.get("type") not in DROPPABLE]
                log.warning("job %s: its event partition is full; dropped %d previews and "
                            "progress events", self.job_id, len(items) - len(kept))
                items = kept


class GpuSink:
    """The runner's sink in the GPU container (`RunSink`)."""

    def __init__(self, life: Lifecycle, sender: QueueSender,
                 cold_start: tuple[float, float] | None = None) -> None:
        self.life = life
        self.sender = sender
        self.cold_start = cold_start  # this container's, for its first job only
        self.ended = asyncio.Event()
        self._started = False

    async def event(self, payload: Payload) -> None:
        files = payload.files if isinstance(payload, Executed) else []
        if isinstance(payload, Preview):
            payload = messages.fit(payload)
        self.sender.send(messages.event_item(payload), files)

    async def changed(self) -> None:
        if self.life.status == RUNNING and not self._started:
            self._started = True
            self.sender.send(messages.start_item(self.cold_start))
        if self.life.terminal and not self.ended.is_set():
            self.sender.send(messages.end_item(self.life.status, self.life.error))
            self.ended.set()
