"""The seam between the extension's logic and the ComfyUI it runs in.

Everything the extension needs from ComfyUI goes through `Host`, which only
`adapter.py` implements with ComfyUI's own modules. The rest of the extension
imports and tests without ComfyUI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

DEFAULT_USER = "default"


class Host(Protocol):
    @property
    def input_dir(self) -> Path: ...

    @property
    def output_dir(self) -> Path: ...

    @property
    def temp_dir(self) -> Path: ...

    @property
    def comfyui_root(self) -> Path:
        """The ComfyUI install (a `local` backend starts its worker from it)."""
        ...

    def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """A JSON message on the client's WebSocket, as `PromptServer.send_sync` does."""
        ...

    def send_preview(self, image: bytes, image_type: str, metadata: dict[str, Any],
                     sid: str | None) -> None:
        """A preview frame, with metadata if the client negotiated it, else legacy."""
        ...

    def next_number(self, front: bool) -> int:
        """The queue number ComfyUI would give the next prompt (an int, as ComfyUI's)."""
        ...

    def on_prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run the other extensions' on-prompt handlers, as ComfyUI does."""
        ...

    def check_prompt_id(self, value: object) -> str:
        """A client-chosen prompt id as ComfyUI takes it; ValueError if it refuses it."""
        ...

    async def validate(self, prompt_id: str, prompt: dict[str, Any],
                       targets: list[str] | None) -> tuple[Any, ...] | None:
        """ComfyUI's own `(valid, error, outputs, node_errors)` for the prompt, after
        ComfyUI's node replacements (applied in place). None when the prompt uses a
        node type this ComfyUI lacks: then only the remote can judge it."""
        ...

    def model_path(self, folder: str, name: str) -> Path | None:
        """The local file of model `folder/name`, or None (what ComfyUI would load)."""
        ...

    def cache_args(self) -> list[str]:
        """This ComfyUI's cache flags (`--cache-lru N`...), for a worker on this machine."""
        ...

    def has_jobs_api(self) -> bool:
        """Whether this ComfyUI serves `/api/jobs` (v0.26+)."""
        ...

    def add_history(self, prompt_id: str, entry: dict[str, Any]) -> None:
        """Put an entry into ComfyUI's history (the queue broadcast is `queue_changed`)."""
        ...

    def queue_changed(self) -> None:
        """Broadcast the queue status (so `queue_remaining` counts remote jobs)."""
        ...

    def settings(self, user: str = DEFAULT_USER) -> dict[str, Any]:
        """A user's saved ComfyUI settings."""
        ...

    def request_user(self, request: web.Request) -> str:
        """Whose request this is: ComfyUI's `comfy-user` in multi-user mode, else default."""
        ...
