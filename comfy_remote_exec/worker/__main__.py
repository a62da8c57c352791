"""`python -m comfy_remote_exec.worker`: serve the job API in front of a local ComfyUI.

Arguments after `--` go to ComfyUI itself (for example `-- --cpu`; without a
device flag, `--cpu` is added when ComfyUI's torch sees no GPU). The URL is
printed once ComfyUI is healthy and the API accepts jobs. A ComfyUI that fails
to start is reported with its last log lines, and the exit code is 3.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from ..discovery import ComfyUINotFound, find_comfyui
from ..errors import RemoteUnavailable
from ..logsafe import hide_url_queries
from .app import Worker, WorkerConfig, token_from_env
from .serve import serve_until_signalled
from .service.service import KEEP_JOBS


def parse_args(argv: list[str]) -> argparse.Namespace:
    comfy_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, comfy_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m comfy_remote_exec.worker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", help="ComfyUI install (else COMFYUI_PATH, "
                        "~/comfy/ComfyUI, ~/ComfyUI)")
    parser.add_argument("--python", help="ComfyUI's Python (else its .venv/ or venv/)")
    parser.add_argument("--base-dir", required=True, type=Path,
                        help="ComfyUI --base-directory for the worker: models, inputs, outputs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8288)
    parser.add_argument("--token-env", help="name of the env var holding the bearer token")
    parser.add_argument("--comfy-port", type=int, default=0,
                        help="port of the worker's own ComfyUI (default: a free one)")
    parser.add_argument("--blob-dir", type=Path,
                        help="content-addressed input cache (default: under --base-dir)")
    parser.add_argument("--allow-private-urls", action="store_true",
                        help="let media URLs and webhooks reach loopback/private addresses")
    parser.add_argument("--keep-jobs", type=int, default=KEEP_JOBS, metavar="N",
                        help=f"finished job records kept (default {KEEP_JOBS})")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.comfy_args = comfy_args
    return args


async def serve(args: argparse.Namespace) -> None:
    install = find_comfyui(args.comfyui, args.python)
    worker = Worker(WorkerConfig(
        install=install, base_dir=args.base_dir, token=token_from_env(args.token_env),
        comfy_args=args.comfy_args, comfy_port=args.comfy_port, blob_dir=args.blob_dir,
        allow_private_urls=args.allow_private_urls, keep_jobs=args.keep_jobs))
    try:
        await worker.start()
    except BaseException:
        await worker.stop()
        raise
    try:
        await serve_until_signalled(worker.app, args.host, args.port)
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hide_url_queries()
    try:
        asyncio.run(serve(args))
    except ComfyUINotFound as exc:
        print(exc.message, file=sys.stderr)
        return 2
    except RemoteUnavailable as exc:
        tail = "".join(f"\n  {line}" for line in exc.log_tail[-30:])
        print(f"comfy-remote-exec worker: {exc.message}."
              f"{' Its last log lines:' if tail else ''}{tail}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
