"""The launcher's local ComfyUI: run it, echo its log, and check the extension is in it.

Standard library only (the launcher's rule). ComfyUI's output is passed
through to our stdout byte for byte (colours and progress bars intact) while
its last lines are kept, so a ComfyUI that dies at start is reported with the
lines that say why, never with a Python traceback of ours.

Once ComfyUI answers HTTP, `GET /remote_exec/status` tells whether the
extension loaded. ComfyUI registers every custom node's routes before its
server starts, so a 404 there is final: the extension failed to import, and
remote mode would silently run everything locally. That is reported as one
line pointing at ComfyUI's own import-failure lines.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAIL_LINES = 40
START_TIMEOUT = 600.0


class ComfyStartError(RuntimeError):
    """ComfyUI did not come up with the extension: `message` is for the user as is."""


@dataclass
class LocalComfy:
    """A running ComfyUI child whose output is echoed and whose tail is kept."""

    proc: subprocess.Popen[bytes]
    url: str
    _tail: collections.deque[bytes] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    _partial: bytes = b""
    _done: threading.Event = field(default_factory=threading.Event)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        out = getattr(sys.stdout, "buffer", None)
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            if out is not None:
                out.write(chunk)
                out.flush()
            lines = (self._partial + chunk).replace(b"\r", b"\n").split(b"\n")
            self._partial = lines.pop()[-4096:]
            self._tail.extend(line for line in lines if line.strip())
        self._done.set()

    def tail(self) -> list[str]:
        self._done.wait(5)  # the last lines arrive after the exit status
        lines = [*self._tail, self._partial] if self._partial.strip() else list(self._tail)
        return [line.decode("utf-8", "replace") for line in lines]


def client_url(listen: str, port: int) -> str:
    """Where to reach a ComfyUI that listens on `listen` (a wildcard means loopback)."""
    host = listen.split(",")[0].strip() or "127.0.0.1"
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def in_use(url: str) -> bool:
    """Something already listens at `url` (which would answer in our ComfyUI's place)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 2):
            return True
    except OSError:
        return False


def start(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], url: str) -> LocalComfy:
    if in_use(url):
        raise ComfyStartError(f"something already listens at {url}; stop it or pick "
                              "another --port")
    proc = subprocess.Popen(list(cmd), cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    comfy = LocalComfy(proc=proc, url=url)
    threading.Thread(target=comfy._pump, name="comfyui-output", daemon=True).start()
    return comfy


def _get(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def wait_ready(comfy: LocalComfy, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Poll until ComfyUI answers; return the extension's status or raise `ComfyStartError`."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        code = comfy.proc.poll()
        if code is not None:
            tail = "\n".join(f"  {line}" for line in comfy.tail())
            raise ComfyStartError(f"ComfyUI exited with code {code} before it was ready. "
                                  f"Its last log lines:\n{tail}")
        status, body = _get(f"{comfy.url}/remote_exec/status")
        if status == 404:
            raise ComfyStartError(
                f"ComfyUI is up but comfy-remote-exec did not load (GET /remote_exec/status "
                f"answered {status}), so nothing would run remotely: see the "
                "'Cannot import ... comfy-remote-exec' and 'IMPORT FAILED' lines in ComfyUI's "
                "log above.")
        if status:  # the route is there (an error answer still means the extension loaded)
            return body if status == 200 and isinstance(body, dict) else {}
        if time.monotonic() > deadline:
            raise ComfyStartError(f"ComfyUI did not answer at {comfy.url} within "
                                  f"{timeout:.0f} s")
        comfy._done.wait(delay)
        delay = min(delay * 1.5, 1.0)


def stop(comfy: LocalComfy, grace: float = 30.0) -> None:
    if comfy.proc.poll() is None:
        comfy.proc.terminate()
        try:
            comfy.proc.wait(grace)
        except subprocess.TimeoutExpired:
            comfy.proc.kill()
            comfy.proc.wait()
