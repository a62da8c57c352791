"""`python -m comfy_remote_exec.platforms.modal.local`: the Modal API layer, run here.

Modal's cloud is not needed to try the Modal app's code: this serves the same
aiohttp API the Modal app serves (`api.open_api`), over the Modal layer's
own parts (`ModalStore`, `ModalExecutor`, `VolumeStorage`), with in-process
stand-ins for Modal's objects (`standins`: `DictStandIn`, `QueueStandIn`,
`VolumeStandIn`, `FunctionStandIn`). The "GPU side" is the code the Modal
GPU class runs (`gpu.GpuWorker`: `prepare`, `resume`, `run`), in this
process, on a real ComfyUI child (`--base-dir` is its base directory). The
API and the GPU side each see the data volume through their own view, which
they commit and reload as they must on Modal.

Modal cuts every web request at 150 s; `--cut-after` does the same here (the
connection is closed, whatever is in flight), and `--stream-limit` is when
the API ends an event stream by itself, so clients' resumption can be tried
with small values. The extension talks to it as to a deployment:

    python -m comfy_remote_exec.platforms.modal.local --base-dir /tmp/modal-gpu -- --cpu
    python launcher/launch.py --backend modal --url http://127.0.0.1:8289

It prints `comfy-remote-exec worker ready at URL` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ...discovery import ComfyInstall, ComfyUINotFound, find_comfyui
from ...errors import RemoteUnavailable
from ...worker.app import token_from_env
from ...worker.serve import serve_until_signalled
from .api import STREAM_LIMIT, ModalApi, ModalParts, open_api
from .executor import GpuFunctions
from .gpu import GpuConfig, GpuWorker
from .standins import (
    DictStandIn,
    FunctionCallStandIn,
    FunctionStandIn,
    QueueStandIn,
    VolumeStandIn,
)
from .storage import VolumeStorage

MODAL_CUT = 150.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cut_middleware(seconds: float) -> Any:
    """Close the connection of any request still in flight after `seconds`, body
    included (as Modal's 150 s limit does)."""

    @web.middleware
    async def cut(request: web.Request, handler: Handler) -> web.StreamResponse:
        def abort() -> None:
            if request.transport is not None:
                request.transport.abort()

        timer = asyncio.get_running_loop().call_later(seconds, abort)
        try:
            response: web.StreamResponse = await handler(request)
            if isinstance(response, web.FileResponse):  # sent in prepare(): cut that too
                # Sent here, so the connection closes after it: aiohttp keeps alive only
                # what it sends itself.
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                sent = _Sent(status=response.status)
                sent.force_close()
                return sent
            return response
        finally:
            timer.cancel()

    return cut


class _Sent(web.StreamResponse):
    """A response `cut_middleware` has sent already: nothing is left to send."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


@dataclass
class LocalModal:
    """The Modal API layer and its GPU side, in this process, over stand-ins."""

    api: ModalApi
    gpu: GpuWorker
    function: FunctionStandIn
    store_dict: DictStandIn
    events: QueueStandIn
    volume: VolumeStandIn
    functions: GpuFunctions
    token: str | None

    def parts(self, view: Path) -> ModalParts:
        """Modal's parts as a new API container sees them, its volume view at `view`."""
        mount = self.volume.mount(view)
        return ModalParts(self.store_dict, self.events, mount, mount.path, self.functions)

    async def close(self) -> None:
        await self.api.close()
        await self.gpu.stop()


async def start_local(install: ComfyInstall, base_dir: Path, state_dir: Path, *,
                      token: str | None, comfy_args: list[str], jobs: int = 1,
                      stream_limit: float = STREAM_LIMIT, cut_after: float | None = MODAL_CUT,
                      snapshot: bool = False, idle: float = 5.0,
                      allow_private_urls: bool = False) -> LocalModal:
    store_dict, events = DictStandIn(), QueueStandIn()
    volume = VolumeStandIn(state_dir / "volume")
    gpu_view = volume.mount(state_dir / "gpu-data")
    gpu = GpuWorker(GpuConfig(install=install, base_dir=base_dir, state_dir=state_dir / "gpu",
                              comfy_args=comfy_args, snapshot=snapshot, require_gpu=False),
                    VolumeStorage(gpu_view, gpu_view.path), events, store_dict)
    try:
        await gpu.prepare()  # on Modal: @modal.enter(snap=True)
        await gpu.resume()  # on Modal: @modal.enter(snap=False)
    except BaseException:
        await gpu.stop()
        raise
    function = FunctionStandIn(gpu.run, max_concurrent=jobs)
    functions = GpuFunctions(spawn=function.spawn.aio, call_from_id=FunctionCallStandIn.from_id,
                             describe=gpu.describe)
    local = LocalModal(None, gpu, function, store_dict, events, volume,  # type: ignore[arg-type]
                       functions, token)
    local.api = await open_api(local.parts(state_dir / "api-data"), token=token,
                               stream_limit=stream_limit, idle=idle,
                               allow_private_urls=allow_private_urls)
    if cut_after:
        local.api.app.middlewares.insert(0, cut_middleware(cut_after))
    return local


def parse_args(argv: list[str]) -> argparse.Namespace:
    comfy_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, comfy_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m comfy_remote_exec.platforms.modal.local",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", help="ComfyUI install (else COMFYUI_PATH, ...)")
    parser.add_argument("--python", help="ComfyUI's Python (else its .venv/ or venv/)")
    parser.add_argument("--base-dir", required=True, type=Path,
                        help="the GPU side's ComfyUI --base-directory (models, outputs)")
    parser.add_argument("--state-dir", type=Path,
                        help="the stand-ins' volume and views (default BASE_DIR/modal_local)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8289)
    parser.add_argument("--token-env", help="name of the env var holding the bearer token")
    parser.add_argument("--jobs", type=int, default=1,
                        help="GPU calls running at once (Modal: containers x inputs)")
    parser.add_argument("--cut-after", type=float, default=MODAL_CUT,
                        help="close any request after this many seconds (Modal: 150; 0: never)")
    parser.add_argument("--stream-limit", type=float, default=STREAM_LIMIT,
                        help="end event streams after this many seconds (clients resume)")
    parser.add_argument("--snapshot", action="store_true",
                        help="start ComfyUI the memory-snapshot way (CPU first, then restore)")
    parser.add_argument("--allow-private-urls", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.comfy_args = comfy_args
    return args


async def serve(args: argparse.Namespace) -> None:
    install = find_comfyui(args.comfyui, args.python)
    state = args.state_dir or args.base_dir / "modal_local"
    local = await start_local(install, args.base_dir.resolve(), state.resolve(),
                              token=token_from_env(args.token_env), comfy_args=args.comfy_args,
                              jobs=args.jobs, stream_limit=args.stream_limit,
                              cut_after=args.cut_after or None, snapshot=args.snapshot,
                              allow_private_urls=args.allow_private_urls)
    try:
        await serve_until_signalled(local.api.app, args.host, args.port)
    finally:
        await local.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except ComfyUINotFound as exc:
        print(exc.message, file=sys.stderr)
        return 2
    except RemoteUnavailable as exc:
        tail = "".join(f"\n  {line}" for line in exc.log_tail[-30:])
        print(f"comfy-remote-exec (modal, local): {exc.message}.{tail}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
