"""The stand-ins keep the documented semantics of Modal's Dict, Queue, Volume and
FunctionCall, which the Modal layer's own tests rely on."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from pathlib import Path

import modal.exception
import pytest

from comfy_remote_exec.platforms.modal.standins import (
    DictStandIn,
    FunctionCallStandIn,
    FunctionStandIn,
    QueueStandIn,
    VolumeStandIn,
)

# -- Dict ------------------------------------------------------------------------------


async def test_dict_values_are_copies_and_keys_iterate() -> None:
    d = DictStandIn()
    record = {"status": "queued", "outputs": []}
    assert await d.put.aio("job:1", record) is True
    record["status"] = "changed after the put"
    assert (await d.get.aio("job:1"))["status"] == "queued"
    assert await d.put.aio("job:1", {"x": 1}, skip_if_exists=True) is False
    await d.update.aio({"job:2": 2}, other=3)
    assert sorted([k async for k in d.keys.aio()]) == ["job:1", "job:2", "other"]
    assert dict([kv async for kv in d.items.aio()])["job:2"] == 2
    assert await d.pop.aio("job:2") == 2 and await d.pop.aio("job:2", None) is None
    with pytest.raises(KeyError):
        d.pop("job:2")
    assert d.get("nothing", "default") == "default" and d.len() == 2 and "other" in d


# -- Queue -----------------------------------------------------------------------------


async def test_queue_get_removes_and_partitions_are_apart() -> None:
    q = QueueStandIn()
    await q.put_many.aio([1, 2, 3], partition="job-a")
    await q.put.aio("b", partition="job-b")
    assert await q.get_many.aio(2, partition="job-a") == [1, 2]
    assert await q.get.aio(partition="job-a") == 3
    assert await q.get.aio(block=False, partition="job-a") is None
    assert await q.get_many.aio(10, block=False, partition="job-a") == []
    assert q.len(partition="job-b") == 1 and q.len(total=True) == 1
    with pytest.raises(modal.exception.InvalidError):
        await q.put.aio(1, partition="x" * 65)


async def test_queue_blocking_get_waits_until_its_timeout_then_raises_empty() -> None:
    q = QueueStandIn()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        await q.get_many.aio(5, block=True, timeout=0.3, partition="quiet")
    assert time.monotonic() - started >= 0.3
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05, partition="quiet")  # the sync one too


async def test_queue_blocked_readers_wake_on_a_put_from_any_thread() -> None:
    q = QueueStandIn()
    reader = asyncio.create_task(q.get_many.aio(10, timeout=10, partition="p"))
    await asyncio.sleep(0)  # the reader is blocked now
    threading.Thread(target=q.put_many, args=(["x", "y"],), kwargs={"partition": "p"}).start()
    assert await asyncio.wait_for(reader, 5) == ["x", "y"]


async def test_queue_limits_items_and_partition_size() -> None:
    q = QueueStandIn(partition_items=2)
    with pytest.raises(modal.exception.RequestSizeError):
        await q.put.aio(b"x" * (1024 * 1024 + 1), partition="p")
    await q.put_many.aio([1, 2], partition="p")
    with pytest.raises(queue.Full):
        await q.put.aio(3, block=False, partition="p")
    with pytest.raises(queue.Full):
        await q.put.aio(3, timeout=0.1, partition="p")
    waiting = asyncio.create_task(q.put.aio(3, timeout=5, partition="p"))
    await asyncio.sleep(0)
    assert await q.get.aio(partition="p") == 1
    await asyncio.wait_for(waiting, 5)
    assert await q.get_many.aio(5, partition="p") == [2, 3]


# -- Volume ----------------------------------------------------------------------------


def test_volume_hides_changes_until_commit_and_reload(tmp_path: Path) -> None:
    volume = VolumeStandIn(tmp_path / "remote")
    writer, reader = volume.mount(tmp_path / "gpu"), volume.mount(tmp_path / "api")
    (writer.path / "jobs" / "a").mkdir(parents=True)
    (writer.path / "jobs" / "a" / "out.png").write_bytes(b"one")
    reader.reload()
    assert not (reader.path / "jobs" / "a" / "out.png").exists(), "not committed yet"
    writer.commit()
    assert not (reader.path / "jobs" / "a" / "out.png").exists(), "committed, not reloaded"
    reader.reload()
    assert (reader.path / "jobs" / "a" / "out.png").read_bytes() == b"one"
    # A container mounted later sees what was committed.
    assert (volume.mount(tmp_path / "late").path / "jobs" / "a" / "out.png").is_file()
    # The reader's own uncommitted file survives its reload; a deletion travels on commit.
    (reader.path / "blobs").mkdir()
    (reader.path / "blobs" / "mine").write_bytes(b"local")
    (writer.path / "jobs" / "a" / "out.png").unlink()
    writer.commit()
    reader.reload()
    assert (reader.path / "blobs" / "mine").read_bytes() == b"local"
    assert not (reader.path / "jobs" / "a" / "out.png").exists()
    writer.reload()
    assert not (writer.path / "blobs" / "mine").exists(), "never committed"


def test_volume_reload_fails_while_a_file_is_open(tmp_path: Path) -> None:
    volume = VolumeStandIn(tmp_path / "remote")
    api = volume.mount(tmp_path / "api")
    (api.path / "served.bin").write_bytes(b"x" * 10)
    with (api.path / "served.bin").open("rb"), pytest.raises(RuntimeError, match="open files"):
        api.reload()
    api.reload()


def test_volume_last_write_wins(tmp_path: Path) -> None:
    volume = VolumeStandIn(tmp_path / "remote")
    a, b = volume.mount(tmp_path / "a"), volume.mount(tmp_path / "b")
    (a.path / "f").write_bytes(b"from a")
    (b.path / "f").write_bytes(b"from b")
    a.commit()
    b.commit()
    a.reload()
    assert (a.path / "f").read_bytes() == b"from b"


# -- FunctionCall ----------------------------------------------------------------------


async def test_function_call_get_cancel_and_timeout() -> None:
    release = asyncio.Event()

    async def body(x: int) -> dict[str, int]:
        await release.wait()
        return {"x": x}

    fn = FunctionStandIn(body)
    call = await fn.spawn.aio(7)
    with pytest.raises(TimeoutError):  # the builtin: no result yet
        await call.get.aio(timeout=0)
    assert FunctionCallStandIn.from_id(call.object_id) is call
    release.set()
    assert await call.get.aio(timeout=5) == {"x": 7}

    async def forever() -> None:
        await asyncio.Event().wait()

    hung = await FunctionStandIn(forever).spawn.aio()
    await hung.cancel.aio()
    with pytest.raises(modal.exception.RemoteError):
        await hung.get.aio(timeout=5)
    late = await FunctionStandIn(forever, timeout=0.1).spawn.aio()
    with pytest.raises(modal.exception.FunctionTimeoutError):
        await late.get.aio(timeout=5)

    async def broken() -> None:
        raise ValueError("in the function")

    with pytest.raises(ValueError, match="in the function"):
        await (await FunctionStandIn(broken).spawn.aio()).get.aio(timeout=5)


async def test_calls_wait_for_a_slot_and_a_cancelled_waiting_call_never_runs() -> None:
    release = asyncio.Event()

    async def body() -> str:
        await release.wait()
        return "ran"

    fn = FunctionStandIn(body, max_concurrent=1)
    first = await fn.spawn.aio()
    second = await fn.spawn.aio()
    await asyncio.sleep(0)
    assert fn.started == 1
    await second.cancel.aio()
    release.set()
    assert await first.get.aio(timeout=5) == "ran"
    with pytest.raises(modal.exception.RemoteError):
        await second.get.aio(timeout=5)
    assert fn.started == 1
