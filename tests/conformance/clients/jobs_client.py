#!/usr/bin/env python3
"""A client of the `/v1/jobs` API, written as its users write them: it imports
nothing of this project and knows only the API's documented shapes.

    jobs_client.py URL WORKFLOW.json --out DIR [--media NAME=FILE ...]
                   [--token TOKEN] [--webhook URL] [--log FILE]

It submits the workflow with its media (base64), polls `GET /v1/jobs/{id}`
until the job is `completed` or `failed`, decodes each output's `data` and
saves it under DIR by its `filename` (a text output's `data` is its text).
It prints `job_id <id>` once the job is queued, then one line of JSON:
`{"status", "error", "saved": [file names]}`; it exits 0 when the job
completed, 1 when it failed. `--log` appends every answer (method, path,
status, body) as a JSON line.
"""

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import requests


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--media", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--token")
    parser.add_argument("--webhook")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--poll", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    session = requests.Session()
    if args.token:
        session.headers["Authorization"] = f"Bearer {args.token}"

    def call(method: str, path: str, **kwargs: object) -> requests.Response:
        resp = session.request(method, args.url.rstrip("/") + path, timeout=30, **kwargs)
        if args.log:
            with args.log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"method": method, "path": path,
                                     "status": resp.status_code, "body": resp.json()}) + "\n")
        return resp

    body = {"workflow": json.loads(args.workflow.read_text(encoding="utf-8")), "media": []}
    for item in args.media:
        name, _, file = item.partition("=")
        body["media"].append({"name": name,
                              "data": base64.b64encode(Path(file).read_bytes()).decode()})
    if args.webhook:
        body["webhook_url"] = args.webhook
    resp = call("POST", "/v1/jobs", json=body)
    if resp.status_code != 202:
        print(f"submitting failed: {resp.status_code} {resp.text}", file=sys.stderr)
        return 2
    job_id = resp.json()["job_id"]
    print(f"job_id {job_id}", flush=True)

    deadline = time.monotonic() + args.timeout
    while True:
        resp = call("GET", f"/v1/jobs/{job_id}")
        resp.raise_for_status()
        job = resp.json()
        if job["status"] in ("completed", "failed"):
            break
        if time.monotonic() > deadline:
            print(f"job {job_id} still {job['status']} after {args.timeout} s", file=sys.stderr)
            return 3
        time.sleep(args.poll)

    args.out.mkdir(parents=True, exist_ok=True)
    saved = []
    for output in job["outputs"]:
        if not output.get("data"):
            continue
        target = args.out / Path(output["filename"]).name
        if output["type"] == "text":
            target.write_text(output["data"], encoding="utf-8")
        else:
            target.write_bytes(base64.b64decode(output["data"]))
        saved.append(target.name)
    print(json.dumps({"status": job["status"], "error": job["error"], "saved": saved}))
    return 0 if job["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
