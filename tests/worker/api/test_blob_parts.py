"""Blobs uploaded in parts (`PUT /v1/blobs/{sha256}` with `Content-Range`), on a bare app.

Each part must start where the stored bytes end; the blob appears only once
all of it is in and hashes to its name; `bytes */TOTAL` asks where an upload
stands; the single PUT of existing clients is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.protocol import ContentRange
from comfy_remote_exec.worker.api.api import (
    DIRS,
    SERVICE,
    add_routes,
    error_middleware,
    protocol_middleware,
)
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs
from comfy_remote_exec.worker.inputs.blobs import PARTIAL_TTL, BlobStore
from comfy_remote_exec.worker.service.jobs import JobStore
from comfy_remote_exec.worker.service.service import JobService

DATA = os.urandom(10_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, JobService]]:
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"),
                             BlobStore(tmp_path / "blobs", max_bytes=1_000_000), http)
        app = web.Application(middlewares=[error_middleware, protocol_middleware])
        app[SERVICE] = service
        app[DIRS] = ComfyDirs(tmp_path)
        routes = web.RouteTableDef()
        add_routes(routes)
        app.add_routes(routes)
        async with TestServer(app) as server, httpx.AsyncClient(
                base_url=str(server.make_url(""))) as client:
            yield client, service


async def put(client: httpx.AsyncClient, start: int | None, stop: int | None,
              body: bytes | None = None, total: int = len(DATA)) -> httpx.Response:
    part = (ContentRange(None, None, total) if start is None or stop is None
            else ContentRange.of(start, stop, total))
    content = body if body is not None else b"" if start is None else DATA[start:stop]
    return await client.put(f"/v1/blobs/{SHA}", content=content,
                            headers={"Content-Range": part.header()})


async def missing(client: httpx.AsyncClient) -> list[str]:
    resp = await client.post("/v1/blobs/missing", json={"sha256": [SHA]})
    return list(resp.json()["missing"])


async def test_parts_in_order_make_the_blob_visible_only_at_the_end(api: tuple) -> None:
    client, service = api
    first = await put(client, 0, 4000)
    assert first.status_code == 202
    assert first.json() == {"sha256": SHA, "stored": False, "complete": False,
                            "received": 4000, "size": len(DATA)}
    assert await missing(client) == [SHA], "not visible while parts are missing"
    assert (await put(client, 4000, 8000)).json()["received"] == 8000
    last = await put(client, 8000, len(DATA))
    assert last.status_code == 201 and last.json()["complete"] is True
    assert await missing(client) == []
    assert service.blobs.path(SHA).read_bytes() == DATA
    again = await put(client, 0, 4000)
    assert again.status_code == 200 and again.json()["stored"] is False
    assert again.json()["complete"] is True


async def test_a_part_must_start_where_the_stored_bytes_end(api: tuple) -> None:
    client, _ = api
    await put(client, 0, 4000)
    for start in (0, 3000, 5000):
        wrong = await put(client, start, start + 1000)
        assert wrong.status_code == 409
        error = wrong.json()["error"]
        assert error["code"] == "offset_mismatch" and error["details"] == {"received": 4000}
    status = await put(client, None, None)
    assert status.status_code == 202 and status.json()["received"] == 4000
    assert (await put(client, 4000, len(DATA))).status_code == 201


async def test_wrong_bytes_are_refused_and_the_upload_starts_over(api: tuple) -> None:
    client, service = api
    await put(client, 0, 4000)
    bad = await put(client, 4000, len(DATA), body=bytes(len(DATA) - 4000))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "hash_mismatch"
    assert not service.blobs.has(SHA)
    assert (await put(client, None, None)).json()["received"] == 0


async def test_a_part_longer_than_its_range_is_dropped(api: tuple) -> None:
    client, _ = api
    await put(client, 0, 4000)
    long = await put(client, 4000, 5000, body=DATA[4000:6000])
    assert long.status_code == 400 and long.json()["error"]["code"] == "bad_range"
    assert (await put(client, None, None)).json()["received"] == 4000


@pytest.mark.parametrize("header", ["bytes 5-4/10", "bytes 0-10/10", "bytes=0-4/10",
                                    "items 0-4/10", "bytes 0-4/*"])
async def test_malformed_content_range(api: tuple, header: str) -> None:
    client, _ = api
    resp = await client.put(f"/v1/blobs/{SHA}", content=b"x" * 5,
                            headers={"Content-Range": header})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_range"


async def test_too_large_is_refused_before_any_byte(api: tuple) -> None:
    client, _ = api
    resp = await put(client, 0, 4000, total=2_000_000)
    assert resp.status_code == 413
    assert (await put(client, None, None)).json()["received"] == 0


async def test_status_query_finishes_an_upload_whose_bytes_are_in(tmp_path: Path) -> None:
    """All bytes stored, but the worker stopped before it verified them: the next
    status query verifies and publishes the blob."""
    store = BlobStore(tmp_path)
    partial = store.partial_path(SHA)
    partial.parent.mkdir()
    partial.write_bytes(DATA)
    result = await store.put_part(_none(), SHA, ContentRange(None, None, len(DATA)))
    assert (result.complete, result.stored) == (True, True)
    assert store.path(SHA).read_bytes() == DATA and not partial.exists()


async def test_a_new_store_goes_on_from_the_bytes_on_disk(tmp_path: Path) -> None:
    """A restarted worker has no hasher in memory: it hashes what is stored."""
    first = BlobStore(tmp_path)
    assert (await first.put_part(_chunks(DATA[:6000]), SHA,
                                 ContentRange.of(0, 6000, len(DATA)))).received == 6000
    second = BlobStore(tmp_path)
    done = await second.put_part(_chunks(DATA[6000:]), SHA,
                                 ContentRange.of(6000, len(DATA), len(DATA)))
    assert done.complete and second.path(SHA).read_bytes() == DATA


async def test_abandoned_partials_go_when_a_new_upload_starts(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    await store.put_part(_chunks(DATA[:100]), SHA, ContentRange.of(0, 100, len(DATA)))
    old = time.time() - PARTIAL_TTL - 60
    os.utime(store.partial_path(SHA), (old, old))
    other = hashlib.sha256(b"other").hexdigest()
    await store.put_part(_chunks(b"oth"), other, ContentRange.of(0, 3, 5))
    assert store.received(SHA) == 0 and store.received(other) == 3


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i:i + 1000]


async def _none() -> AsyncIterator[bytes]:
    return
    yield b""
