"""Preflight over a catalog-like value, a local model lookup and hashes: pure functions.

Unknown node types are refused as ComfyUI refuses them; a model the remote lacks
and this machine has becomes a ShipNeed when small enough, else a 400 naming the
file, the remote's list and the sync command; a model both have with other
bytes is a named conflict; warm, nothing is asked of the remote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from comfy_remote_exec.extension.preflight import (
    conflicts,
    needs_from_json,
    needs_to_json,
    preflight,
)


@dataclass(frozen=True)
class Entry:
    name: str
    size: int


@dataclass
class Catalog:
    content_version: str = "v1"
    object_info: dict[str, Any] = field(default_factory=dict)
    models: dict[str, list[Entry]] = field(default_factory=dict)


def object_info(loras: list[str], ckpts: list[str]) -> dict[str, Any]:
    return {
        "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [ckpts, {}]}},
                                   "output_node": False},
        "LoraLoader": {"input": {"required": {
            "model": ["MODEL"], "lora_name": ["COMBO", {"options": loras}],
            "strength_model": ["FLOAT", {}]}}, "output_node": False},
        "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}, "output_node": True},
    }


PROMPT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
    "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0],
                                                 "lora_name": "style.safetensors",
                                                 "strength_model": 1.0}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
}


@pytest.fixture
def local(tmp_path: Path) -> Any:
    root = tmp_path / "models"

    def find(folder: str, name: str) -> Path | None:
        path = root / folder / name
        return path if path.is_file() else None

    find.root = root  # type: ignore[attr-defined]
    return find


def put(local: Any, folder: str, name: str, data: bytes) -> Path:
    path = local.root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def catalog(loras: list[Entry], ckpts: list[Entry]) -> Catalog:
    return Catalog(object_info=object_info([e.name for e in loras], [e.name for e in ckpts]),
                   models={"loras": loras, "checkpoints": ckpts})


BASE = Entry("base.safetensors", 10)


def test_everything_on_the_remote_passes(local: Any) -> None:
    pf = preflight(PROMPT, catalog([Entry("style.safetensors", 5)], [BASE]), local,
                   max_ship_bytes=100)
    assert pf.ok and pf.ship == [] and pf.compare == []


def test_an_unknown_node_type_is_refused_as_comfyui_refuses_it(local: Any) -> None:
    prompt = {**PROMPT, "5": {"class_type": "FancyNode", "inputs": {},
                              "_meta": {"title": "Fancy"}}}
    pf = preflight(prompt, catalog([], [BASE]), local, max_ship_bytes=100)
    body = pf.refusal()
    assert body["node_errors"] == {}
    assert body["error"]["type"] == "missing_node_type"
    assert "Fancy" in body["error"]["message"]
    assert body["error"]["details"] == "Node ID '#5'"
    assert body["error"]["extra_info"]["class_type"] == "FancyNode"


def test_a_missing_model_this_machine_has_is_shipped(local: Any) -> None:
    path = put(local, "loras", "style.safetensors", b"x" * 50)
    pf = preflight(PROMPT, catalog([Entry("other.safetensors", 3)], [BASE]), local,
                   max_ship_bytes=100)
    assert pf.ok
    assert [(n.folder, n.name, n.local_path, n.size) for n in pf.ship] == [
        ("loras", "style.safetensors", path, 50)]
    again = needs_from_json(needs_to_json(pf.ship, pf.ship_nodes))
    assert again == [(pf.ship[0], "2")]


def test_a_missing_model_nowhere_names_the_file_and_the_remote_list(local: Any) -> None:
    pf = preflight(PROMPT, catalog([Entry("other.safetensors", 3)], [BASE]), local,
                   max_ship_bytes=100)
    body = pf.refusal()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    node = body["node_errors"]["2"]
    assert node["class_type"] == "LoraLoader" and node["dependent_outputs"] == ["9"]
    error = node["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert "style.safetensors" in error["details"] and "other.safetensors" in error["details"]
    assert error["extra_info"]["received_value"] == "style.safetensors"


def test_a_model_too_big_to_ship_says_how_to_ship_it(local: Any) -> None:
    put(local, "loras", "style.safetensors", b"x" * 500)
    pf = preflight(PROMPT, catalog([], [BASE]), local, max_ship_bytes=100)
    details = pf.node_errors["2"]["errors"][0]["details"]
    assert "ShipModelsMaxGB" in details
    assert "python -m comfy_remote_exec models sync --folder loras" in details
    assert pf.ship == []


def test_a_backend_that_cannot_ship_says_so(local: Any) -> None:
    put(local, "loras", "style.safetensors", b"x" * 50)
    pf = preflight(PROMPT, catalog([], [BASE]), local, max_ship_bytes=100, can_ship=False)
    assert "cannot ship" in pf.node_errors["2"]["errors"][0]["details"]


def test_a_same_name_of_another_size_is_a_conflict_at_once(local: Any) -> None:
    put(local, "checkpoints", "base.safetensors", b"y" * 11)
    pf = preflight(PROMPT, catalog([Entry("style.safetensors", 5)], [BASE]), local,
                   max_ship_bytes=100)
    error = pf.node_errors["1"]["errors"][0]
    assert error["type"] == "model_conflict" and "base.safetensors" in error["details"]


async def test_a_same_size_file_is_compared_by_hash_once_per_version(local: Any) -> None:
    put(local, "checkpoints", "base.safetensors", b"y" * 10)
    cat = catalog([Entry("style.safetensors", 5)], [BASE])
    asked: list[tuple[str, list[str]]] = []

    async def remote_hashes(folder: str, names: list[str]) -> dict[str, str | None]:
        asked.append((folder, names))
        return {n: "ab" * 32 for n in names}

    known: dict[tuple[str, str, str], str | None] = {}
    pf = preflight(PROMPT, cat, local, max_ship_bytes=100)
    assert pf.ok and len(pf.compare) == 1
    await conflicts(pf, PROMPT, cat, remote_hashes, lambda _p: "cd" * 32, known)
    assert pf.node_errors["1"]["errors"][0]["type"] == "model_conflict"
    assert asked == [("checkpoints", ["base.safetensors"])]
    same = preflight(PROMPT, cat, local, max_ship_bytes=100)
    await conflicts(same, PROMPT, cat, remote_hashes, lambda _p: "ab" * 32, known)
    assert same.ok and len(asked) == 1, "warm: the remote is not asked again"


def test_a_warm_preflight_is_fast(local: Any) -> None:
    names = [f"lora_{i}.safetensors" for i in range(2000)]
    cat = catalog([Entry(n, 1) for n in names], [BASE])
    prompt = {str(i): {"class_type": "LoraLoader",
                       "inputs": {"model": ["1", 0], "lora_name": names[i],
                                  "strength_model": 1.0}} for i in range(2, 200)}
    prompt["1"] = PROMPT["1"]
    start = time.perf_counter()
    pf = preflight(prompt, cat, local, max_ship_bytes=100)
    assert pf.ok
    assert time.perf_counter() - start < 0.2


def test_a_name_the_remote_would_refuse_is_refused_here(local: Any) -> None:
    put(local, "loras", ".style.safetensors", b"x" * 50)
    prompt = {**PROMPT, "2": {**PROMPT["2"], "inputs": {**PROMPT["2"]["inputs"],
                                                         "lora_name": ".style.safetensors"}}}
    pf = preflight(prompt, catalog([], [BASE]), local, max_ship_bytes=100)
    assert pf.ship == [] and "hidden part" in pf.node_errors["2"]["errors"][0]["details"]
