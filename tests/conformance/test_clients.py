"""Conformance on a real worker and ComfyUI: the clients of `clients/`, written as
the job APIs' users write them, run unchanged; every answer they and the test
get, and every webhook the worker sends, matches the spec's schemas.

The worker is one of this module's own, started with `--allow-private-urls` so
its webhooks may reach the receiver on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_remote_exec.discovery import ComfyInstall

from ..conftest import TOKEN, WorkerHandle, prepare_worker_base, start_worker, stop_worker
from ..helpers import png_bytes, sse_events, workflow
from .conform import check, check_answer

pytestmark = pytest.mark.comfyui

CLIENTS = Path(__file__).parent / "clients"


@dataclass
class Hooks:
    """A loopback receiver of webhooks."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def for_job(self, job_id: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [b for b in self.bodies if b.get("job_id") == job_id]
            if found:
                time.sleep(0.2)  # a second one would be a bug: give it the chance to show
                return [b for b in self.bodies if b.get("job_id") == job_id]
            time.sleep(0.05)
        raise AssertionError(f"no webhook for job {job_id} within {timeout} s")


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    bodies: list[dict[str, Any]] = []

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Hooks(f"http://127.0.0.1:{server.server_address[1]}/hook", bodies)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def worker(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerHandle]:
    """A worker whose webhooks may reach loopback, with a client that checks every
    answer it gets against the schemas."""
    base = tmp_path_factory.mktemp("conformance_worker")
    prepare_worker_base(base)
    handle = start_worker(comfy_install, base, "--allow-private-urls")

    def conforms(resp: httpx.Response) -> None:
        if resp.headers.get("content-type", "").startswith("application/json"):
            resp.read()
            check_answer(resp.request.method, resp.request.url.raw_path.decode(),
                         resp.status_code, resp.json())

    handle.client.event_hooks["response"] = [conforms]
    yield handle
    stop_worker(handle)


@dataclass
class Client:
    """One run of a client script."""

    proc: subprocess.Popen[str]
    job_id: str
    log: Path
    out: Path

    def result(self, timeout: float = 120.0) -> tuple[int, dict[str, Any]]:
        stdout, stderr = self.proc.communicate(timeout=timeout)
        assert stdout.strip(), stderr
        return self.proc.returncode, json.loads(stdout.strip().splitlines()[-1])

    def answers(self) -> list[dict[str, Any]]:
        """Every answer the client got, each checked against its schema."""
        logged = [json.loads(line) for line in self.log.read_text().splitlines()]
        for answer in logged:
            assert check_answer(answer["method"], answer["path"], answer["status"],
                                answer["body"]) is not None, answer
        return logged


def start_client(script: str, worker: WorkerHandle, flow: dict[str, Any], tmp_path: Path,
                 *extra: str) -> Client:
    tmp_path.mkdir(parents=True, exist_ok=True)
    flow_file = tmp_path / "workflow.json"
    flow_file.write_text(json.dumps(flow))
    log, out = tmp_path / "answers.jsonl", tmp_path / "saved"
    proc = subprocess.Popen(
        [sys.executable, str(CLIENTS / script), worker.url, str(flow_file), "--out", str(out),
         "--token", TOKEN, "--log", str(log), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    assert len(first) == 2 and first[0] in ("job_id", "id"), (first, proc.stderr.read())
    return Client(proc, first[1], log, out)


def long_flow(seconds: float = 30.0) -> dict[str, Any]:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=int(seconds / 0.1), step_seconds=0.1, previews=False)
    flow["1"]["inputs"]["color"] = int(time.monotonic_ns() % 0xFFFFFF)  # not from the cache
    return flow


# A node input that passes ComfyUI's checks and fails when the node runs: an empty
# file name makes the node open its folder for writing.
FAILING = {"1": {"class_type": "RemoteExecTestFile",
                 "inputs": {"name": "", "subfolder": "files", "size": 10}}}


def wait_running(worker: WorkerHandle, job_id: str) -> None:
    """Until the job runs its steps (each answer checked on the way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = worker.client.get(f"/v1/jobs/{job_id}", params={"inline": "none"}).json()
        if job["progress_details"]["step"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not start its steps")


def assert_saved_as_on_worker(worker: WorkerHandle, job: dict[str, Any], saved: Path) -> None:
    """Each output the client saved is byte for byte what the worker holds."""
    assert job["outputs"]
    for out in job["outputs"]:
        got = (saved / out["filename"]).read_bytes()
        if "folder" in out:  # a file ComfyUI wrote
            on_worker = (worker.base / out["folder"] / out["subfolder"] / out["filename"])
            assert got == on_worker.read_bytes()
            assert hashlib.sha256(got).hexdigest() == out["sha256"]
        else:  # the text a node showed
            assert got.decode() == job["ui"][out["node_id"]]["text"][out["index"]]
        assert len(got) == out["size_bytes"]


# -- /v1/jobs ----------------------------------------------------------------------------


def test_jobs_client_saves_every_output(worker: WorkerHandle, hooks: Hooks,
                                        tmp_path: Path) -> None:
    flow = workflow("load_scale") | {
        "4": {"class_type": "StringConcatenate",
              "inputs": {"string_a": "made", "string_b": "remotely", "delimiter": " "}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(color=(7, 8, int(time.monotonic_ns() % 255))))
    client = start_client("jobs_client.py", worker, flow, tmp_path / "run",
                          "--media", f"example.png={image}", "--webhook", hooks.url)
    code, result = client.result()
    assert (code, result["status"], result["error"]) == (0, "completed", None), result
    answers = client.answers()
    assert answers[0]["status"] == 202 and answers[-1]["body"]["status"] == "completed"
    job = worker.client.get(f"/v1/jobs/{client.job_id}").json()
    assert {o["type"] for o in job["outputs"]} == {"image", "text"}
    assert sorted(result["saved"]) == sorted(o["filename"] for o in job["outputs"])
    assert_saved_as_on_worker(worker, job, client.out)
    [hook] = hooks.for_job(client.job_id)
    check("webhook", hook)
    assert (hook["event"], hook["cancelled"]) == ("job.completed", False)


def test_jobs_client_sees_a_failed_job_fail(worker: WorkerHandle, hooks: Hooks,
                                            tmp_path: Path) -> None:
    client = start_client("jobs_client.py", worker, FAILING, tmp_path, "--webhook", hooks.url)
    code, result = client.result()
    assert (code, result["status"]) == (1, "failed"), result
    assert "RemoteExecTestFile (node 1)" in result["error"]
    client.answers()
    job = worker.client.get(f"/v1/jobs/{client.job_id}").json()
    assert job["error_details"]["code"] == "execution_error" and not job["cancelled"]
    [hook] = hooks.for_job(client.job_id)
    check("webhook", hook)
    assert (hook["event"], hook["error"]) == ("job.failed", result["error"])


def test_jobs_client_sees_a_cancelled_job_fail(worker: WorkerHandle, hooks: Hooks,
                                               tmp_path: Path) -> None:
    client = start_client("jobs_client.py", worker, long_flow(), tmp_path,
                          "--webhook", hooks.url)
    wait_running(worker, client.job_id)
    cancelled = worker.client.delete(f"/v1/jobs/{client.job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] is True
    code, result = client.result()
    assert (code, result) == (1, {"status": "failed", "error": "Cancelled by user",
                                  "saved": []})
    client.answers()
    # Our own event stream still says what happened.
    with httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {TOKEN}"}) as sse:
        events = list(sse_events(sse, f"/v1/jobs/{client.job_id}/events"))
    assert events[-1]["data"]["status"] == "cancelled"
    [hook] = hooks.for_job(client.job_id)
    check("webhook", hook)
    assert (hook["event"], hook["cancelled"], hook["error"]) == (
        "job.failed", True, "Cancelled by user")
    listed = worker.client.get("/v1/jobs", params={"status": "failed", "limit": 500}).json()
    assert client.job_id in [j["job_id"] for j in listed["jobs"]]


def test_inline_choices_on_a_real_job(worker: WorkerHandle) -> None:
    job, _ = worker.run({"workflow": workflow("invert")})
    job_id = job["job_id"]
    [out] = worker.client.get(f"/v1/jobs/{job_id}").json()["outputs"]
    on_worker = (worker.base / "output" / out["subfolder"] / out["filename"]).read_bytes()
    assert base64.b64decode(out["data"]) == on_worker
    [none] = worker.client.get(f"/v1/jobs/{job_id}", params={"inline": "none"}).json()["outputs"]
    assert "data" not in none and worker.client.get(none["url"]).content == on_worker


# -- the polling API ---------------------------------------------------------------------


def test_polling_client_saves_the_images(worker: WorkerHandle, tmp_path: Path) -> None:
    flow = workflow("invert")
    flow["1"]["inputs"]["color"] = int(time.monotonic_ns() % 0xFFFFFF)
    client = start_client("polling_client.py", worker, flow, tmp_path)
    code, result = client.result()
    assert (code, result["status"]) == (0, "COMPLETED"), result
    answers = client.answers()
    assert answers[0]["status"] == 202 and answers[-1]["status"] == 200
    job = worker.client.get(f"/v1/jobs/{client.job_id}").json()
    assert result["saved"] == [o["filename"] for o in job["outputs"]]
    assert_saved_as_on_worker(worker, job, client.out)


def test_polling_client_sees_failures_and_cancels_fail(worker: WorkerHandle,
                                                       tmp_path: Path) -> None:
    failing = start_client("polling_client.py", worker, FAILING, tmp_path / "failing")
    code, result = failing.result()
    assert (code, result["status"]) == (1, "FAILED")
    assert "RemoteExecTestFile (node 1)" in result["error"]
    failing.answers()
    cancelled = start_client("polling_client.py", worker, long_flow(), tmp_path / "cancelled")
    wait_running(worker, cancelled.job_id)
    worker.client.delete(f"/v1/jobs/{cancelled.job_id}")
    code, result = cancelled.result()
    assert (code, result["status"], result["error"]) == (1, "FAILED", "Cancelled by user")
    assert any(a["status"] == 202 for a in cancelled.answers()[1:]), "it saw RUNNING first"


def test_polling_errors(worker: WorkerHandle) -> None:
    unknown = worker.client.get("/status/not-a-call")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Call ID not found or invalid."}
    refused = worker.client.post("/submit_workflow", json={"workflow": workflow("unknown_node")})
    assert refused.status_code == 400 and "NodeThatDoesNotExist" in refused.json()["error"]
