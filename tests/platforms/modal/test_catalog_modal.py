"""The catalog routes on the Modal app's API (its local run, over the stand-ins): the
API holds no models, so it lists the names its GPU containers reported (size 0), keeps
the version the same way, and says plainly that it cannot hash them."""

from __future__ import annotations

import pytest

from .conftest import ModalRun

pytestmark = pytest.mark.comfyui

UPSCALER = "tiny_compact_x2.safetensors"


def test_modal_api_serves_the_catalog(modal_run: ModalRun) -> None:
    listing = modal_run.client.get("/v1/models")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert {"name": UPSCALER, "size": 0} in body["folders"]["upscale_models"]
    info = modal_run.client.get("/v1/object_info")
    assert "SaveImage" in info.json()
    tag = info.headers["ETag"]
    assert tag == f'"{body["content_version"]}"'
    assert modal_run.client.get("/v1/object_info",
                                headers={"If-None-Match": tag}).status_code == 304
    assert modal_run.client.get("/health").json()["content_version"] == body["content_version"]
    hashes = modal_run.client.post("/v1/models/hashes", json={
        "folder": "upscale_models", "names": [UPSCALER]})
    assert hashes.status_code == 501 and hashes.json()["error"]["code"] == "not_supported"
    absent = modal_run.client.post("/v1/models/hashes", json={
        "folder": "upscale_models", "names": ["absent.pth"]})
    assert absent.json() == {"hashes": {"absent.pth": None}}
