"""Models shipped to a RunPod network volume over its S3-compatible API.

moto's S3 server on loopback stands in for RunPod's volume API (same protocol:
path-style buckets, a bucket per volume id, multipart uploads). A model lands
under `models/<folder>/<name>` with its sha256 in the object's metadata; a
second ship sends nothing; a transfer cut after its first part goes on from
the parts the volume kept; other bytes under the name are a conflict.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from comfy_remote_exec.backends.base import ModelStore
from comfy_remote_exec.backends.registry import BackendContext
from comfy_remote_exec.backends.runpod import RunpodVolumeBackend, _make
from comfy_remote_exec.backends.runpod_volume import (
    MIN_PART,
    NetworkVolumeStore,
    VolumeConfig,
)
from comfy_remote_exec.errors import Conflict, RemoteUnavailable

VOLUME = "vol4abc123"


@pytest.fixture(scope="module")
def volume(s3: dict[str, str]) -> VolumeConfig:
    parts = urlsplit(s3["BUCKET_ENDPOINT_URL"])
    config = VolumeConfig(VOLUME, f"{parts.scheme}://{parts.netloc}/", "us-east-1",
                          s3["BUCKET_ACCESS_KEY_ID"], s3["BUCKET_SECRET_ACCESS_KEY"])
    NetworkVolumeStore(config).s3.create_bucket(Bucket=VOLUME)
    return config


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "big.safetensors"
    path.write_bytes(os.urandom(2 * MIN_PART + 12345))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored(store: NetworkVolumeStore, key: str) -> tuple[bytes, dict[str, Any]]:
    obj = store.s3.get_object(Bucket=VOLUME, Key=key)
    return obj["Body"].read(), obj["Metadata"]


async def test_a_model_lands_on_the_volume_once(volume: VolumeConfig, model: Path) -> None:
    store = NetworkVolumeStore(volume, part_size=MIN_PART)
    seen: list[int] = []
    first = await store.ship_model("loras", "a/one.safetensors", model, sha(model),
                                   lambda done, _t: seen.append(done))
    assert first.placed and first.sent == model.stat().st_size
    assert seen[-1] == model.stat().st_size
    body, meta = stored(store, "models/loras/a/one.safetensors")
    assert hashlib.sha256(body).hexdigest() == sha(model) and meta["sha256"] == sha(model)
    again = await store.ship_model("loras", "a/one.safetensors", model, sha(model))
    assert again.same and again.sent == 0
    assert await store.model_hashes("loras", ["a/one.safetensors", "none.safetensors"]) == {
        "a/one.safetensors": sha(model), "none.safetensors": None}


async def test_a_cut_transfer_resumes_from_the_parts_kept(volume: VolumeConfig,
                                                          model: Path) -> None:
    store = NetworkVolumeStore(volume, part_size=MIN_PART)

    def cut(done: int, _total: int) -> None:
        if done >= MIN_PART:
            raise ConnectionError("cut")

    with pytest.raises(RemoteUnavailable):
        await store.ship_model("checkpoints", "cut.safetensors", model, sha(model), cut)
    restarted = NetworkVolumeStore(volume, part_size=MIN_PART)
    result = await restarted.ship_model("checkpoints", "cut.safetensors", model, sha(model))
    assert result.placed
    assert result.sent == model.stat().st_size - MIN_PART, "the first part was not sent again"
    body, _ = stored(store, "models/checkpoints/cut.safetensors")
    assert hashlib.sha256(body).hexdigest() == sha(model)


async def test_other_bytes_under_the_name_are_a_conflict(volume: VolumeConfig,
                                                         model: Path) -> None:
    store = NetworkVolumeStore(volume)
    store.s3.put_object(Bucket=VOLUME, Key="models/vae/v.safetensors", Body=b"theirs")
    with pytest.raises(Conflict) as caught:
        await store.ship_model("vae", "v.safetensors", model, sha(model))
    assert caught.value.code == "model_conflict" and "vae/v.safetensors" in caught.value.message
    assert stored(store, "models/vae/v.safetensors")[0] == b"theirs"


def test_the_runpod_backend_ships_when_a_volume_is_configured(tmp_path: Path) -> None:
    env = {"RUNPOD_DATACENTER": "EU-RO-1"}
    section = {"volume_id": VOLUME, "s3_access_key": "AK", "s3_secret_key": "very-secret"}
    ctx = BackendContext(url="ep-1", token="rp-key", env=env, comfyui_root=tmp_path,
                         state_dir=tmp_path, section=section)
    backend = _make(ctx)
    assert isinstance(backend, RunpodVolumeBackend) and isinstance(backend, ModelStore)
    config = backend.volume.config
    assert config.endpoint == "https://s3api-eu-ro-1.runpod.io/" and config.region == "EU-RO-1"
    assert "very-secret" not in repr(config) and "AK" not in repr(config)
    plain = _make(BackendContext(url="ep-1", token="rp-key", env={}, comfyui_root=tmp_path,
                                 state_dir=tmp_path))
    assert not isinstance(plain, ModelStore)
