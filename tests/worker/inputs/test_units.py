"""What a job brings in: blobs, media checks, URL fetching, and preparing the workflow."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfy_remote_exec.errors import BadRequest, PayloadTooLarge
from comfy_remote_exec.protocol import InputOverride
from comfy_remote_exec.worker.comfy.comfyui_nodes.remote_exec_worker import user_prompt
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.inputs.media import check_content
from comfy_remote_exec.worker.inputs.prepare import (
    apply_overrides,
    find_missing_models,
    missing_model_error,
    rewrite_media_refs,
)
from comfy_remote_exec.worker.inputs.urls import check_url, fetch_url

from ...helpers import png_bytes

# -- blobs -----------------------------------------------------------------------------


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_blob_stream_verified_before_visible(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"hello world"
    sha = hashlib.sha256(data).hexdigest()
    assert store.missing([sha, sha]) == [sha]
    await store.put_stream(chunks(b"hello ", b"world"), sha)
    assert store.missing([sha]) == [] and store.path(sha).read_bytes() == data
    wrong = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(BadRequest, match="not the declared"):
        await store.put_stream(chunks(b"y"), wrong)
    assert not store.has(wrong)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".upload")] == []


async def test_blob_size_limit(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=4)
    with pytest.raises(PayloadTooLarge):
        await store.put_stream(chunks(b"12345"), hashlib.sha256(b"12345").hexdigest())


def test_blob_link_into_job_folder(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    sha, _ = store.put_bytes(b"abc")
    store.link_into(sha, tmp_path / "job" / "sub" / "a.png")
    assert (tmp_path / "job" / "sub" / "a.png").read_bytes() == b"abc"


# -- media -----------------------------------------------------------------------------


def test_check_content() -> None:
    data = png_bytes()
    assert check_content("a.png", data[:64], data) == "image"
    with pytest.raises(BadRequest, match="not a valid image"):
        check_content("a.png", b"text", b"text")
    assert check_content("a.mp4", b"\x00\x00\x00\x18ftypmp42") == "video"
    with pytest.raises(BadRequest, match="not a video"):
        check_content("a.webm", b"nope")
    assert check_content("notes.txt", b"anything") == "text"
    assert check_content("blob.bin", b"anything") == "file"


def test_decompression_bomb_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    data = buf.getvalue()
    with pytest.raises(PayloadTooLarge):
        check_content("bomb.png", data[:64], data)


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://[::1]/x", "http://10.0.0.1/",
                                 "http://169.254.169.254/", "ftp://example.com/x", "http:///x"])
async def test_check_url_refuses(url: str) -> None:
    with pytest.raises(BadRequest):
        await check_url(url)


async def test_check_url_allows_private_when_told() -> None:
    await check_url("http://127.0.0.1/x", allow_private=True)


async def test_fetch_follows_redirects_but_checks_every_hop() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/start":
            return httpx.Response(302, headers={"location": "http://127.0.0.1/secret"})
        return httpx.Response(200, content=b"secret")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        # The first hop is a public literal (no DNS; MockTransport sends nothing);
        # the redirect to loopback is checked again and refused.
        with pytest.raises(BadRequest, match="loopback"):
            await fetch_url(client, "http://93.184.216.34/start")


async def test_fetch_size_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 100)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(PayloadTooLarge):
            await fetch_url(client, "http://93.184.216.34/big", limit=10)
        assert await fetch_url(client, "http://93.184.216.34/ok", limit=100) == b"x" * 100


def resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]
    return resolve


async def test_fetch_goes_to_the_address_it_checked() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"media")

    resolve = resolver({"media.example": ["93.184.216.34"]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        data = await fetch_url(client, "https://media.example:8443/a.png", resolve=resolve)
    assert data == b"media"
    [request] = seen
    # httpx never resolves the name again, so a rebinding answer is never used.
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.headers["host"] == "media.example:8443"
    assert request.extensions["sni_hostname"] == "media.example"


async def test_a_name_with_any_private_address_is_refused() -> None:
    resolve = resolver({"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda r: httpx.Response(200))) as client:
        with pytest.raises(BadRequest, match="loopback"):
            await fetch_url(client, "http://rebind.example/x.png", resolve=resolve)


# -- prepare ---------------------------------------------------------------------------


def test_overrides_and_media_rewrite() -> None:
    flow = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png [input]"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": "sub/b.png"}},
            "3": {"class_type": "X", "inputs": {"text": "a.png is a file", "n": 1}},
            "4": {"class_type": "LoadImageOutput", "inputs": {"image": "a.png [output]"}},
            "5": {"class_type": "LoadImageOutput", "inputs": {"image": "c.png [output]"}}}
    out = apply_overrides(flow, [InputOverride("3", "n", 5)], {})
    assert out["3"]["inputs"]["n"] == 5 and flow["3"]["inputs"]["n"] == 1
    original = copy.deepcopy(out)
    sha_a, sha_b = "a" * 64, "b" * 64
    rewrite_media_refs(out, {"a.png": sha_a, "sub/b.png": sha_b, "[output]/a.png": sha_b})
    assert out["1"]["inputs"]["image"] == f"remote_exec/{sha_a}/a.png [input]"
    assert out["2"]["inputs"]["image"] == f"remote_exec/{sha_b}/sub/b.png"
    assert out["4"]["inputs"]["image"] == f"remote_exec/{sha_b}/[output]/a.png [input]"
    assert out["5"]["inputs"]["image"] == "c.png [output]", "not shipped: the worker's own"
    assert out["3"]["inputs"]["text"] == "a.png is a file"
    # The worker's ComfyUI hook gives nodes that save the prompt the user's own values.
    assert user_prompt(out) == original
    assert json.dumps(user_prompt(out)) == json.dumps(original), "same keys, same order"
    with pytest.raises(BadRequest, match="not in the workflow"):
        apply_overrides(flow, [InputOverride("9", "n", 1)], {})


def test_missing_models_found_in_both_combo_formats() -> None:
    info = {"UpscaleModelLoader": {"input": {"required": {"model_name": [
        "COMBO", {"options": ["tiny.safetensors"]}]}}},
        "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [[], {}]}}}}
    flow = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "big.pth"}},
            "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd.ckpt"}},
            "3": {"class_type": "UpscaleModelLoader",
                  "inputs": {"model_name": "tiny.safetensors"}}}
    missing = find_missing_models(flow, info)
    assert [(m["node_id"], m["folder"]) for m in missing] == [("1", "upscale_models"),
                                                              ("2", "checkpoints")]
    err = missing_model_error(missing)
    assert err.code == "missing_model" and "tiny.safetensors" in err.message
