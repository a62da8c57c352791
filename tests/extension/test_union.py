"""The union of the local install's and the remote's nodes and models: pure functions
over ComfyUI's own answer shapes (both COMBO forms), no ComfyUI needed."""

from __future__ import annotations

import copy
from typing import Any

from comfy_remote_exec.extension.union import (
    combo_options,
    union_experiment_files,
    union_experiment_folders,
    union_files,
    union_folders,
    union_node_info,
    union_object_info,
)
from comfy_remote_exec.extension.unionview import apply, wanted
from comfy_remote_exec.protocol.catalog import ModelEntry, RemoteCatalog


def loader(options: list[str], v3: bool = False, extra: str | None = None) -> dict[str, Any]:
    spec: list[Any] = (["COMBO", {"options": options, "tooltip": "t"}] if v3
                       else [options, {"tooltip": "t"}])
    required: dict[str, Any] = {"model_name": spec}
    if extra is not None:
        required["sampler"] = [[extra], {}]
    return {"input": {"required": required}, "output": ["MODEL"], "name": "L"}


LOCAL: dict[str, Any] = {
    "UpscaleModelLoader": loader(["local_x4.pth"]),
    "CheckpointLoaderSimple": loader(["a.safetensors", "m.safetensors"], v3=True),
    "KSamplerish": loader([], extra="euler"),
    "LocalOnly": loader(["whatever"]),
}
REMOTE = RemoteCatalog("v1", {
    "UpscaleModelLoader": loader(["tiny_x2.safetensors"]),
    "CheckpointLoaderSimple": loader(["b.safetensors", "sub/z.safetensors"], v3=True),
    "KSamplerish": loader([], extra="remote_sampler"),
    "RemoteInvert": {"input": {"required": {"image": ["IMAGE"]}}, "output": ["IMAGE"]},
}, {"upscale_models": [ModelEntry("tiny_x2.safetensors", 123)],
    "checkpoints": [ModelEntry("b.safetensors", 5), ModelEntry("sub/z.safetensors", 6)],
    "remote_only_folder": [ModelEntry("q.gguf", 7)]})


def options(info: dict[str, Any], node: str, name: str = "model_name") -> list[Any]:
    found = combo_options(info[node]["input"]["required"][name])
    assert found is not None
    return found


def test_object_info_union() -> None:
    before = copy.deepcopy(LOCAL)
    out = union_object_info(LOCAL, REMOTE)
    assert before == LOCAL  # ComfyUI's answer is not changed in place
    assert options(out, "UpscaleModelLoader") == ["local_x4.pth", "tiny_x2.safetensors"]
    assert options(out, "CheckpointLoaderSimple") == [
        "a.safetensors", "b.safetensors", "m.safetensors", "sub/z.safetensors"]
    assert out["CheckpointLoaderSimple"]["input"]["required"]["model_name"][1]["tooltip"] == "t"
    assert options(out, "KSamplerish", "sampler") == ["euler"]  # not a model list
    assert out["LocalOnly"] is LOCAL["LocalOnly"]
    assert out["RemoteInvert"] == REMOTE.object_info["RemoteInvert"]
    assert list(out)[:4] == list(LOCAL)  # local types first, in ComfyUI's order


def test_node_info_union() -> None:
    assert union_node_info("RemoteInvert", {}, REMOTE) == {
        "RemoteInvert": REMOTE.object_info["RemoteInvert"]}
    got = union_node_info("UpscaleModelLoader",
                          {"UpscaleModelLoader": LOCAL["UpscaleModelLoader"]}, REMOTE)
    assert options(got, "UpscaleModelLoader")[-1] == "tiny_x2.safetensors"
    assert union_node_info("Nope", {}, REMOTE) == {}


def test_model_folders_union() -> None:
    assert union_folders(["checkpoints", "loras"], REMOTE) == [
        "checkpoints", "loras", "upscale_models", "remote_only_folder"]
    assert union_files(["a.safetensors"], "checkpoints", REMOTE) == [
        "a.safetensors", "b.safetensors", "sub/z.safetensors"]
    assert union_files(None, "remote_only_folder", REMOTE) == ["q.gguf"]
    local = [{"name": "checkpoints", "folders": ["/x"]}]
    assert union_experiment_folders(local, REMOTE) == [
        *local, {"name": "upscale_models", "folders": []},
        {"name": "remote_only_folder", "folders": []}]
    files = union_experiment_files(
        [{"name": "b.safetensors", "pathIndex": 0, "modified": 1.0, "size": 5}],
        "checkpoints", REMOTE)
    assert [f["name"] for f in files] == ["b.safetensors", "sub/z.safetensors"]
    assert files[1] == {"name": "sub/z.safetensors", "pathIndex": 0, "modified": 0,
                        "created": 0, "size": 6}


def test_which_answers_and_how() -> None:
    for path in ["/object_info", "/object_info/KSampler", "/models", "/models/loras",
                 "/experiment/models", "/experiment/models/loras"]:
        assert wanted("GET", path), path
    for method, path in [("POST", "/object_info"), ("GET", "/experiment/models/preview/a/0/x"),
                         ("GET", "/prompt"), ("GET", "/models/a/b")]:
        assert not wanted(method, path), path
    assert apply("/models/remote_only_folder", None, 404, REMOTE) == ["q.gguf"]
    assert apply("/models/nowhere", None, 404, REMOTE) is None  # ComfyUI's 404 stays
    assert apply("/experiment/models/remote_only_folder", None, 404, REMOTE)[0]["size"] == 7
    assert apply("/object_info", "not json", 200, REMOTE) is None
    assert "RemoteInvert" in apply("/object_info", LOCAL, 200, REMOTE)
