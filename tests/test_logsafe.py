"""Presigned and client-chosen URLs keep their query strings out of httpx's request log."""

from __future__ import annotations

import logging

import httpx
import pytest

from comfy_remote_exec.logsafe import hide_url_queries


async def test_httpx_request_log_hides_queries(caplog: pytest.LogCaptureFixture) -> None:
    hide_url_queries()
    hide_url_queries()  # idempotent
    assert len(logging.getLogger("httpx").filters) == 1
    caplog.set_level(logging.INFO, logger="httpx")
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda r: httpx.Response(200))) as client:
        await client.get("https://bucket.example/out/a.png?X-Amz-Signature=s3cr3t&X=1")
    [record] = [r for r in caplog.records if r.name == "httpx"]
    text = record.getMessage()
    assert "s3cr3t" not in text
    assert "https://bucket.example/out/a.png" in text and "200" in text
