"""`python launcher/launch.py --backend modal` without `--url`: the URL found earlier
(cached) is used, and the badge reads the app's warm GPU containers; without Modal's
SDK and nothing cached, a clear error and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.modal_url import remember

from .extension.conftest import launch, stop

pytestmark = pytest.mark.comfyui

LAUNCHER = Path(__file__).resolve().parents[1] / "launcher" / "launch.py"


class ModalHealth(BaseHTTPRequestHandler):
    """A stand-in for the Modal app's API `/health` (the app fills `gpu`), one warm GPU
    container; the token is the job API's."""

    def do_GET(self) -> None:
        ok = self.path == "/health" and self.headers.get("Authorization") == "Bearer jt"
        body = json.dumps({"status": "ok", "comfyui": True, "protocol": 2, "protocols": [2],
                           "jobs_active": 0, "gpu": {"warm": 1}} if ok else {}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def modal_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ModalHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_cached_url_serves_and_the_badge_is_warm(comfy_install: ComfyInstall,
                                                      tmp_path: Path, modal_app: str) -> None:
    env = {"REMOTE_EXEC_CACHE_DIR": str(tmp_path / "cache"), "REMOTE_EXEC_TOKEN": "jt",
           "REMOTE_EXEC_CONFIG": str(tmp_path / "no-config.yaml")}
    remember("comfy-remote-exec", "API.serve", modal_app, env)
    handle = launch(comfy_install, tmp_path, "--backend", "modal", env=env)
    try:
        status = httpx.get(f"{handle.url}/remote_exec/status").json()
        health = httpx.get(f"{handle.url}/remote_exec/health", timeout=30).json()
    finally:
        stop(handle)
    assert f"[launcher] the Modal app's URL: {modal_app}\n" in handle.lines
    assert status["config"]["backend"] == "modal" and status["config"]["url"] == modal_app
    assert health["ok"] is True, health
    assert health["remote"]["status"] == "warm" and health["remote"]["gpu"] == {"warm": 1}


def test_without_modal_and_nothing_cached_it_says_what_to_do(comfy_install: ComfyInstall,
                                                             tmp_path: Path) -> None:
    """The launcher's bare Python (`-I`) has no `modal`, and neither has ComfyUI's."""
    env = {**os.environ, "REMOTE_EXEC_CACHE_DIR": str(tmp_path / "cache"),
           "REMOTE_EXEC_CONFIG": str(tmp_path / "no-config.yaml"),
           "REMOTE_EXEC_STATE_DIR": str(tmp_path / "state")}
    has_modal = subprocess.run([str(comfy_install.python), "-c", "import modal"],
                               capture_output=True, check=False).returncode == 0
    if has_modal:
        pytest.skip("this ComfyUI's Python has Modal's SDK")
    result = subprocess.run([sys.executable, "-I", str(LAUNCHER), "--backend", "modal",
                             "--comfyui", str(comfy_install.root), "--no-install"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("[launcher] ")
    assert "pip install modal" in last and "modal token new" in last and "--url" in last
    assert "Traceback" not in result.stderr and "starting ComfyUI" not in result.stderr
