"""Talk to one ComfyUI over its own HTTP API and WebSocket.

A thin async client over an injected `aiohttp.ClientSession`. It translates
ComfyUI's answers into our errors at this one boundary: a rejected prompt
becomes `BadRequest` carrying ComfyUI's `error` and `node_errors` untouched,
a dead ComfyUI becomes `RemoteUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ...errors import BadRequest, RemoteUnavailable


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

    async def models(self, folder: str | None = None) -> Any:
        _, data = await self._request("GET", f"/models/{folder}" if folder else "/models")
        return data

    async def system_stats(self) -> dict[str, Any]:
        _, data = await self._request("GET", "/system_stats")
        return data if isinstance(data, dict) else {}

    async def websocket(self, client_id: str) -> AsyncIterator[str | bytes]:
        """Yield raw WS messages; declares preview metadata support first."""
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        try:
            async with self.session.ws_connect(url, heartbeat=20, max_msg_size=0) as ws:
                await ws.send_json({"type": "feature_flags",
                                    "data": {"supports_preview_metadata": True}})
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        yield msg.data
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
