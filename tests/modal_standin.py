"""A stand-in for Modal's web front: a loopback proxy that cuts every request.

Modal ends every web request at 150 s, event streams and uploads included
(https://modal.com/docs/guide/webhook-timeouts). Modal's cloud is out of these
tests' reach, so this proxy stands in for that one behaviour in front of a
real worker: each request is cut `cut_after` seconds after it came, whatever
it was doing (reading the body, streaming the answer), by closing the
client's connection. `rate` throttles the bytes each way (per request), so a
test's transfers last long enough to be cut; `max_cuts` stops cutting after
that many. It models nothing else of Modal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "upgrade",
              "proxy-connection", "te", "trailer"}
CHUNK = 64 * 1024


class CuttingProxy:
    """`await start()` gives its URL; `cuts` counts the requests it cut, by path."""

    def __init__(self, upstream: str, cut_after: float, rate: float | None = None,
                 max_cuts: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.cut_after = cut_after
        self.rate = rate
        self.max_cuts = max_cuts
        self.cuts: list[str] = []
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _throttle(self, size: int) -> None:
        if self.rate:
            await asyncio.sleep(size / self.rate)

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            await self._throttle(len(chunk))
            yield chunk

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        data = self._body(request) if request.body_exists else None
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, data=data,
                                         allow_redirects=False) as upstream:
            resp = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await self._throttle(len(chunk))
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.max_cuts is not None and len(self.cuts) >= self.max_cuts:
            return await self._relay(request)
        try:
            return await asyncio.wait_for(self._relay(request), self.cut_after)
        except asyncio.TimeoutError:
            self.cuts.append(request.path)
            if request.transport is not None:
                request.transport.abort()  # as Modal ends a request at its limit
            with contextlib.suppress(Exception):
                await request.release()
            raise web.HTTPServiceUnavailable() from None  # never reaches the client
