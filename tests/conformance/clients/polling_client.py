#!/usr/bin/env python3
"""A client of the polling API (`POST /submit_workflow`, `GET /status/{id}`),
written as its users write them: it imports nothing of this project and knows
only the API's documented shapes.

    polling_client.py URL WORKFLOW.json --out DIR [--token TOKEN] [--log FILE]

It submits the workflow, polls `GET /status/{id}` until the call is
`COMPLETED` or `FAILED`, and saves each of `output.images` (base64) under DIR
by its `filename`. It prints `id <id>` once submitted, then one line of JSON:
`{"status", "error", "saved": [file names]}`; it exits 0 when the call
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
    parser.add_argument("--token")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--poll", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}

    def call(method: str, path: str, **kwargs: object) -> requests.Response:
        resp = requests.request(method, args.url.rstrip("/") + path, headers=headers,
                                timeout=30, **kwargs)
        if args.log:
            with args.log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"method": method, "path": path,
                                     "status": resp.status_code, "body": resp.json()}) + "\n")
        return resp

    workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
    resp = call("POST", "/submit_workflow", json={"workflow": workflow})
    if resp.status_code != 202:
        print(f"submitting failed: {resp.json()['error']}", file=sys.stderr)
        return 2
    call_id = resp.json()["id"]
    print(f"id {call_id}", flush=True)

    deadline = time.monotonic() + args.timeout
    while True:
        resp = call("GET", f"/status/{call_id}")
        result = resp.json()
        if resp.status_code == 404:
            print(result["error"], file=sys.stderr)
            return 2
        if result["status"] in ("COMPLETED", "FAILED"):
            break
        if time.monotonic() > deadline:
            print(f"call {call_id} still running after {args.timeout} s", file=sys.stderr)
            return 3
        time.sleep(args.poll)

    saved = []
    if result["status"] == "COMPLETED":
        args.out.mkdir(parents=True, exist_ok=True)
        for image in result["output"]["images"]:
            target = args.out / Path(image["filename"]).name
            target.write_bytes(base64.b64decode(image["data"]))
            saved.append(target.name)
    print(json.dumps({"status": result["status"], "error": result.get("error"),
                      "saved": saved}))
    return 0 if result["status"] == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
