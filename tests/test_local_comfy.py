"""The launcher's local ComfyUI runner, with stand-in processes for the edge cases
(a real ComfyUI runs the same paths in tests/test_launcher.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from comfy_remote_exec import local_comfy
from comfy_remote_exec.worker.comfy.comfy_process import free_port

SERVER = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/remote_exec/status" and sys.argv[2] == "loaded"
        body = json.dumps({"config": {"enabled": True, "backend": "http"}}).encode()
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(body if ok else b"404: Not Found")
    def log_message(self, *args):
        pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def run(tmp_path: Path, code: str, *args: str) -> local_comfy.LocalComfy:
    port = free_port()
    return local_comfy.start([sys.executable, "-c", code, str(port), *args], cwd=tmp_path,
                             env={}, url=local_comfy.client_url("0.0.0.0", port))


def test_client_url() -> None:
    assert local_comfy.client_url("0.0.0.0", 1) == "http://127.0.0.1:1"
    assert local_comfy.client_url("::", 2) == "http://[::1]:2"
    assert local_comfy.client_url("10.0.0.5,127.0.0.1", 3) == "http://10.0.0.5:3"


def test_exit_before_ready_carries_the_log_tail(tmp_path: Path) -> None:
    code = ("import sys\nfor i in range(100): print('line', i)\n"
            "print('progress 10%\\rprogress 50%', end='')\nsys.exit(3)")
    comfy = run(tmp_path, code)
    with pytest.raises(local_comfy.ComfyStartError) as info:
        local_comfy.wait_ready(comfy, timeout=60)
    message = str(info.value)
    assert "exited with code 3 before it was ready" in message
    assert "line 99" in message and "line 50" not in message  # only the tail
    assert message.rstrip().endswith("progress 50%")


def test_ready_returns_the_extensions_status(tmp_path: Path) -> None:
    comfy = run(tmp_path, SERVER, "loaded")
    try:
        status = local_comfy.wait_ready(comfy, timeout=60)
        assert status["config"]["backend"] == "http"
    finally:
        local_comfy.stop(comfy)
    assert comfy.proc.returncode is not None


def test_a_missing_extension_route_is_one_clear_error(tmp_path: Path) -> None:
    comfy = run(tmp_path, SERVER, "not-loaded")
    try:
        with pytest.raises(local_comfy.ComfyStartError) as info:
            local_comfy.wait_ready(comfy, timeout=60)
    finally:
        local_comfy.stop(comfy)
    message = str(info.value)
    assert "did not load" in message and "answered 404" in message and "\n" not in message
    assert "IMPORT FAILED" in message


def test_nothing_answering_is_a_timeout(tmp_path: Path) -> None:
    comfy = run(tmp_path, "import time\nprint('starting', flush=True)\ntime.sleep(60)")
    try:
        with pytest.raises(local_comfy.ComfyStartError, match="did not answer"):
            local_comfy.wait_ready(comfy, timeout=1)
    finally:
        local_comfy.stop(comfy, grace=5)


def test_a_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    server = run(tmp_path, SERVER, "loaded")
    try:
        local_comfy.wait_ready(server, timeout=60)
        with pytest.raises(local_comfy.ComfyStartError, match="already listens"):
            local_comfy.start([sys.executable, "-c", "pass"], cwd=tmp_path, env={},
                              url=server.url)
    finally:
        local_comfy.stop(server)
