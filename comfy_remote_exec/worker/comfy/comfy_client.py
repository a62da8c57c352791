"""Talk to one ComfyUI over its own HTTP API and WebSocket.

A thin async client over an injected `aiohttp.ClientSession`, and the one
boundary where ComfyUI's own formats become ours:
- answers become our errors: a rejected prompt is a `BadRequest` carrying
  ComfyUI's `error` and `node_errors` untouched, a dead ComfyUI is
  `RemoteUnavailable`;
- WebSocket messages become typed payloads (`protocol.events`), tagged with
  their `prompt_id`; messages that belong to no job (queue `status`,
  `feature_flags`, crystools monitors and the like) are dropped here.
  `prompt_id` and `timestamp` leave the data, since the job id names the
  stream and the extension stamps its own; node ids stay as ComfyUI sent them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ...errors import BadRequest, RemoteUnavailable
from ...protocol import COMFY_EVENTS, PAYLOADS, JsonObject, Payload, Preview

# ComfyUI's protocol.BinaryEventTypes
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_LEGACY_IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}


@dataclass(slots=True)
class Message:
    """A ComfyUI message that belongs to a prompt (None: the one running)."""

    prompt_id: str | None
    payload: Payload


def translate_text(raw: str) -> Message | None:
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    kind, data = msg.get("type"), msg.get("data")
    if kind not in COMFY_EVENTS or not isinstance(data, dict):
        return None
    prompt_id = data.pop("prompt_id", None)
    data.pop("timestamp", None)
    if kind == "progress_state":
        for state in (data.get("nodes") or {}).values():
            if isinstance(state, dict):
                state.pop("prompt_id", None)
    return Message(prompt_id if isinstance(prompt_id, str) else None,
                   PAYLOADS[kind].from_data(data))  # type: ignore[union-attr]


def translate_binary(raw: bytes) -> Message | None:
    """Decode a binary preview frame. Other binary events are ignored."""
    if len(raw) < 8:
        return None
    (event,) = struct.unpack(">I", raw[:4])
    meta: JsonObject
    if event == PREVIEW_IMAGE:
        (image_type,) = struct.unpack(">I", raw[4:8])
        meta = {"image_type": _LEGACY_IMAGE_TYPES.get(image_type, "image/jpeg")}
        image = raw[8:]
    elif event == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", raw[4:8])
        try:
            decoded = json.loads(raw[8:8 + length])
        except ValueError:
            return None
        if not isinstance(decoded, dict):
            return None
        meta, image = decoded, raw[8 + length:]
    else:
        return None

    def text(key: str) -> str | None:
        value = meta.get(key)
        return None if value is None else str(value)

    prompt_id = meta.get("prompt_id")
    return Message(prompt_id if isinstance(prompt_id, str) else None, Preview(
        image=image, image_type=text("image_type") or "image/jpeg", node=text("node_id"),
        display_node=text("display_node_id"), parent_node=text("parent_node_id"),
        real_node=text("real_node_id")))


def translate(raw: str | bytes) -> Message | None:
    if isinstance(raw, (bytes, bytearray)):
        return translate_binary(bytes(raw))
    return translate_text(raw)


class ComfyClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self.session.request(method, f"{self.base_url}{path}",
                                            timeout=self.timeout, **kwargs) as resp:
                body = await resp.read()
                try:
                    data = json.loads(body) if body else None
                except ValueError:
                    data = body.decode("utf-8", "replace")
                return resp.status, data
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RemoteUnavailable(f"ComfyUI did not answer {method} {path}: {exc}",
                                    code="comfyui_unreachable") from exc

    async def queue_prompt(self, prompt: dict[str, Any], *, prompt_id: str, client_id: str,
                           number: float | None = None,
                           partial_execution_targets: list[str] | None = None,
                           extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, "prompt_id": prompt_id,
                                "client_id": client_id, "extra_data": extra_data or {}}
        if number is not None:
            body["number"] = number
        if partial_execution_targets is not None:
            body["partial_execution_targets"] = partial_execution_targets
        status, data = await self._request("POST", "/prompt", json=body)
        if status == 200 and isinstance(data, dict):
            return data
        if status == 400 and isinstance(data, dict):
            error = data.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            node_errors = data.get("node_errors") or {}
            node_id = next(iter(node_errors), None) if isinstance(node_errors, dict) else None
            raise BadRequest(_describe_rejection(message, node_errors),
                             code=(error.get("type") if isinstance(error, dict) else None)
                             or "invalid_prompt",
                             node_id=node_id,
                             details={"error": error, "node_errors": node_errors})
        raise RemoteUnavailable(f"ComfyUI answered {status} to /prompt: {data}",
                                code="comfyui_error")

    async def interrupt(self, prompt_id: str | None = None) -> None:
        await self._request("POST", "/interrupt",
                            json={"prompt_id": prompt_id} if prompt_id else {})

    async def delete_queued(self, prompt_id: str) -> None:
        await self._request("POST", "/queue", json={"delete": [prompt_id]})

    async def queue(self) -> dict[str, Any]:
        _, data = await self._request("GET", "/queue")
        return data if isinstance(data, dict) else {}

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        _, data = await self._request("GET", f"/history/{prompt_id}")
        if isinstance(data, dict):
            entry = data.get(prompt_id)
            return entry if isinstance(entry, dict) else None
        return None

    async def object_info(self) -> dict[str, Any]:
        status, data = await self._request("GET", "/object_info")
        if status != 200 or not isinstance(data, dict):
            raise RemoteUnavailable("ComfyUI did not return its node definitions",
                                    code="comfyui_error")
        return data

    async def get_json(self, path: str) -> Any:
        """Any of ComfyUI's JSON routes; None unless it answered 200."""
        status, data = await self._request("GET", path)
        return data if status == 200 else None

    async def models(self, folder: str | None = None) -> Any:
        _, data = await self._request("GET", f"/models/{folder}" if folder else "/models")
        return data

    async def system_stats(self) -> dict[str, Any]:
        _, data = await self._request("GET", "/system_stats")
        return data if isinstance(data, dict) else {}

    async def websocket(self, client_id: str, on_open: Callable[[], None] | None = None
                        ) -> AsyncIterator[Message]:
        """Yield the prompt messages of ComfyUI's WebSocket, typed; declares preview
        metadata support first, so every preview names its prompt and node, then
        calls `on_open`."""
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        try:
            async with self.session.ws_connect(url, heartbeat=20, max_msg_size=0) as ws:
                await ws.send_json({"type": "feature_flags",
                                    "data": {"supports_preview_metadata": True}})
                if on_open is not None:
                    on_open()
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        message = translate(msg.data)
                        if message is not None:
                            yield message
                    elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                        break
        except (aiohttp.ClientError, OSError) as exc:
            raise RemoteUnavailable(f"ComfyUI WebSocket failed: {exc}",
                                    code="comfyui_unreachable") from exc


def _describe_rejection(message: str | None, node_errors: Any) -> str:
    """One readable line from ComfyUI's validation answer."""
    parts = [message or "ComfyUI rejected the workflow"]
    if isinstance(node_errors, dict):
        for node_id, info in node_errors.items():
            if not isinstance(info, dict):
                continue
            for err in info.get("errors", []):
                detail = err.get("details") or err.get("message") or ""
                parts.append(f"node {node_id} ({info.get('class_type', '?')}): {detail}")
    return "; ".join(parts)
