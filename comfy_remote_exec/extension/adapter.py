"""The edge: the only module that imports ComfyUI (`server`, `folder_paths`, ...).

`install()` runs while ComfyUI loads custom nodes. It builds a `ComfyHost`
over the running `PromptServer`, adds the middleware and the `/remote_exec`
routes, makes the queue status and ComfyUI's queue views (`/queue`,
`/api/jobs`) include remote jobs, and starts and stops the extension with the
server's own aiohttp start-up and shutdown signals.
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import Any

import execution
import folder_paths
import nodes
import server
from aiohttp import web
from comfy_api import feature_flags
from protocol import BinaryEventTypes

try:  # ComfyUI v0.26+: the jobs API and its id rules
    from comfy_execution.jobs import validate_job_id as _validate_job_id
except ImportError:
    _validate_job_id = None

from ..config import state_dir
from ..logsafe import hide_url_queries
from .core import RemoteExec
from .host import DEFAULT_USER
from .intercept import make_middleware
from .prestart import cache_flags, read_settings, settings_file
from .routes import add_routes

log = logging.getLogger("comfy_remote_exec")


class EncodedImage:
    """An image the remote already encoded, where ComfyUI expects a PIL image: its
    preview sender only calls `save` (no `max_size` is given, so nothing resizes it),
    so the bytes go out as they came, in order with every other message."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def save(self, fp: io.BytesIO, **_: Any) -> None:
        fp.write(self.data)


class ComfyHost:
    """`Host` over ComfyUI's PromptServer and folder_paths."""

    def __init__(self, prompt_server: Any) -> None:
        self.server = prompt_server
        self.comfyui_root = Path(folder_paths.__file__).resolve().parent
        self._settings_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._settings_paths: dict[tuple[str, str], Path] = {}

    @property
    def input_dir(self) -> Path:
        return Path(folder_paths.get_input_directory())

    @property
    def output_dir(self) -> Path:
        return Path(folder_paths.get_output_directory())

    @property
    def temp_dir(self) -> Path:
        return Path(folder_paths.get_temp_directory())

    def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        self.server.send_sync(event, data, sid)

    def send_preview(self, image: bytes, image_type: str, metadata: dict[str, Any],
                     sid: str | None) -> None:
        # The remote's encoded image goes out as it came: no decoding, no re-encoding.
        if sid is not None and feature_flags.supports_feature(
                self.server.sockets_metadata, sid, "supports_preview_metadata"):
            fmt = "PNG" if image_type == "image/png" else "JPEG"
            self.server.send_sync(BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA,
                                  ((fmt, EncodedImage(image), None), metadata), sid)
        else:  # the legacy frame: a 4-byte image format, then the image
            kind = 2 if image_type == "image/png" else 1
            self.server.send_sync(BinaryEventTypes.PREVIEW_IMAGE,
                                  struct.pack(">I", kind) + image, sid)

    def next_number(self, front: bool) -> int:
        number = int(self.server.number)
        self.server.number += 1
        return -number if front else number

    def on_prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.server.trigger_on_prompt(body))

    def check_prompt_id(self, value: object) -> str:
        if _validate_job_id is None:  # before v0.26 any string was taken
            return str(value)
        return str(_validate_job_id(value))

    async def validate(self, prompt_id: str, prompt: dict[str, Any],
                       targets: list[str] | None) -> tuple[Any, ...] | None:
        known = nodes.NODE_CLASS_MAPPINGS
        if any(isinstance(n, dict) and "class_type" in n and n["class_type"] not in known
               for n in prompt.values()):
            return None
        replacer = getattr(self.server, "node_replace_manager", None)
        if replacer is not None:
            replacer.apply_replacements(prompt)
        return tuple(await execution.validate_prompt(prompt_id, prompt, targets))

    def has_jobs_api(self) -> bool:
        return _validate_job_id is not None

    def model_path(self, folder: str, name: str) -> Path | None:
        """The local file of model `folder/name` (folder_paths, extra paths included)."""
        try:
            path = folder_paths.get_full_path(folder, name)
        except Exception:  # an unknown folder, or a name folder_paths refuses
            return None
        return Path(path) if path else None

    def cache_args(self) -> list[str]:
        from comfy.cli_args import args

        return cache_flags(args)

    def add_history(self, prompt_id: str, entry: dict[str, Any]) -> None:
        queue = self.server.prompt_queue
        with queue.mutex:
            if len(queue.history) > execution.MAXIMUM_HISTORY_SIZE:
                queue.history.pop(next(iter(queue.history)))
            queue.history[prompt_id] = entry

    def queue_changed(self) -> None:
        self.server.queue_updated()

    def settings(self, user: str = DEFAULT_USER) -> dict[str, Any]:
        """A user's saved settings (re-read when the file changes)."""
        try:
            key = (folder_paths.get_user_directory(), user)
            path = self._settings_paths.get(key)
            if path is None:  # resolved once per user: it is asked on every Run
                path = self._settings_paths[key] = settings_file(Path(key[0]), user)
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            return {}
        cached = self._settings_cache.get(user)
        if cached is None or cached[0] != mtime:
            cached = self._settings_cache[user] = (mtime, read_settings(path))
        return cached[1]

    def request_user(self, request: web.Request) -> str:
        try:
            user = self.server.user_manager.get_request_user_id(request)
        except (AttributeError, KeyError):  # an unknown `comfy-user`: ComfyUI's default
            return DEFAULT_USER
        return str(user) if user else DEFAULT_USER


def install() -> RemoteExec:
    prompt_server = server.PromptServer.instance
    installed: RemoteExec | None = getattr(prompt_server, "remote_exec", None)
    if installed is not None:  # loaded twice (e.g. cloned and launched): one set of hooks
        log.warning("comfy-remote-exec is loaded twice; keeping the first copy")
        return installed
    hide_url_queries()
    # httpx logs every request at INFO; in ComfyUI's console (and its log interceptor,
    # which the relay would pay for per request) the remote's traffic is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = ComfyHost(prompt_server)
    core = RemoteExec(host, state_dir())
    prompt_server.remote_exec = core
    prompt_server.app.middlewares.append(make_middleware(core))
    add_routes(prompt_server.routes, core)

    # `status.exec_info.queue_remaining` must count remote jobs too.
    local_queue_info = prompt_server.get_queue_info

    def queue_info() -> dict[str, Any]:
        info = local_queue_info()
        info["exec_info"]["queue_remaining"] += core.dispatcher.remaining()
        return dict(info)

    prompt_server.get_queue_info = queue_info

    # Remote jobs are in ComfyUI's own queue views (`/queue`, `/api/jobs`), pending and
    # running. Only the volatile view: `get_current_queue` drives ComfyUI's interrupt,
    # which must never fire for a remote job.
    prompt_queue = prompt_server.prompt_queue
    local_queue = prompt_queue.get_current_queue_volatile

    def current_queue() -> tuple[list[Any], list[Any]]:
        running, pending = local_queue()
        remote_running, remote_pending = core.dispatcher.queue_items()
        return [*running, *remote_running], [*pending, *remote_pending]

    prompt_queue.get_current_queue_volatile = current_queue

    async def on_startup(app: web.Application) -> None:
        core.start()

    async def on_shutdown(app: web.Application) -> None:
        await core.stop()

    prompt_server.app.on_startup.append(on_startup)
    prompt_server.app.on_shutdown.append(on_shutdown)
    log.info("comfy-remote-exec: remote execution hooks installed (state in %s)", core.state)
    return core
