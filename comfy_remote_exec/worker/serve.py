"""Serve an aiohttp app until SIGINT or SIGTERM: the worker's and the Modal local run's loop.

Both entry points (`python -m comfy_remote_exec.worker` and
`python -m comfy_remote_exec.platforms.modal.local`) listen, print the READY
line that `jobapi.spawn` waits for (with the port the OS chose for port 0),
and clean the site up when told to stop. One copy, so the line they print
cannot drift from what the launcher and the tests read.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

from ..jobapi.spawn import READY


async def serve_until_signalled(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"{READY}http://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
