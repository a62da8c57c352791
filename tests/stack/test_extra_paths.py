"""`stack freeze` finds models (and custom nodes) where ComfyUI's
`extra_model_paths.yaml` puts them, as ComfyUI itself would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from comfy_remote_exec.stack.cli import main as stack_main
from comfy_remote_exec.stack.extra_paths import SearchPath, read_extra_paths
from comfy_remote_exec.stack.freeze import freeze
from comfy_remote_exec.stack.spec import StackError, load_stack

A1111 = """\
a111:
    base_path: {base}
    checkpoints: models/Stable-diffusion
    loras: |
         models/Lora
         models/LyCORIS
    custom_nodes: extensions/comfy_nodes
shared:
    base_path: $SHARED_MODELS
    is_default: true
    loras: loras
beside:
    upscale_models: upscalers
empty:
"""


def api_flow(*names: str) -> dict[str, object]:
    return {str(i): {"class_type": "LoraLoader", "inputs": {"lora_name": n}}
            for i, n in enumerate(names, 1)}


def test_sections_base_paths_and_defaults_are_read_as_comfyui_reads_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARED_MODELS", str(tmp_path / "shared"))
    config = tmp_path / "conf" / "extra_model_paths.yaml"
    config.parent.mkdir()
    config.write_text(A1111.format(base="../webui"))
    webui, here = tmp_path / "webui", config.parent
    assert read_extra_paths(config) == [
        SearchPath("checkpoints", webui / "models" / "Stable-diffusion"),
        SearchPath("loras", webui / "models" / "Lora"),
        SearchPath("loras", webui / "models" / "LyCORIS"),
        SearchPath("custom_nodes", webui / "extensions" / "comfy_nodes"),
        SearchPath("loras", tmp_path / "shared" / "loras", first=True),
        SearchPath("upscale_models", here / "upscalers"),
    ]


@pytest.mark.parametrize(("text", "says"), [
    ("- just\n- a list\n", "expected sections of folder paths"),
    ("a111: models/Lora\n", "section 'a111' is not a mapping"),
    ("a111:\n  loras: {x: 1}\n", "a111.loras is not a path"),
    ("a111: [unclosed\n", "cannot read"),
])
def test_a_file_comfyui_could_not_use_is_a_clear_error(tmp_path: Path, text: str,
                                                       says: str) -> None:
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(text)
    with pytest.raises(StackError, match=says) as err:
        read_extra_paths(config)
    assert str(config) in str(err.value)


def test_freeze_finds_models_and_nodes_in_the_extra_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An install with an A1111 folder and a shared, `is_default` loras folder: each
    model is taken from the first folder ComfyUI searches, under ComfyUI's folder name;
    a custom node in an extra folder is pinned; a name that is an absolute path is not
    looked up."""
    comfy, webui = tmp_path / "ComfyUI", tmp_path / "webui"
    monkeypatch.setenv("SHARED_MODELS", str(tmp_path / "shared"))
    (comfy / "models" / "loras").mkdir(parents=True)
    (comfy / "comfyui_version.py").write_text('__version__ = "0.3.64"\n')
    (comfy / "extra_model_paths.yaml").write_text(A1111.format(base=webui))
    files = {
        "a1111 checkpoint": webui / "models" / "Stable-diffusion" / "sd15.safetensors",
        "lycoris": webui / "models" / "LyCORIS" / "sub" / "ly.safetensors",
        "install's lora": comfy / "models" / "loras" / "both.safetensors",
        "shared lora": tmp_path / "shared" / "loras" / "both.safetensors",
        "outside": comfy / "models" / "outside.safetensors",
    }
    for what, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(what.encode() * 50)
    node = webui / "extensions" / "comfy_nodes" / "pack"
    node.mkdir(parents=True)
    (node / "pyproject.toml").write_text('[project]\nname = "pack"\nversion = "2.0.0"\n'
                                         '[tool.comfy]\nPublisherId = "p"\n')
    flow = tmp_path / "flow.json"
    outside = str(files["outside"])  # a name that is a path of its own
    flow.write_text(json.dumps({**api_flow("sub/ly.safetensors", "both.safetensors", outside),
                                "9": {"class_type": "CheckpointLoaderSimple",
                                      "inputs": {"ckpt_name": "sd15.safetensors"}}}))

    frozen = freeze(comfy, workflows=[flow])
    models = {m.relpath: m for m in frozen.stack.models}
    assert set(models) == {"checkpoints/sd15.safetensors", "loras/sub/ly.safetensors",
                           "loras/both.safetensors"}
    shared = files["shared lora"].read_bytes()
    assert models["loras/both.safetensors"].sha256 == hashlib.sha256(shared).hexdigest()
    assert [(n.name, n.registry, n.version) for n in frozen.stack.custom_nodes] == [
        ("pack", "pack", "2.0.0")]
    [note] = frozen.notes
    assert note.startswith(f"model {outside}: used by a workflow but in none")
    assert str(comfy / "extra_model_paths.yaml") in note

    # The command line: another file instead of the install's own.
    other = tmp_path / "other.yaml"
    other.write_text(f"mine:\n  checkpoints: {webui / 'models' / 'Stable-diffusion'}\n")
    out = tmp_path / "stack.yaml"
    assert stack_main(["freeze", "--comfyui", str(comfy), "--workflow", str(flow),
                       "--extra-model-paths-config", str(other), "--out", str(out)]) == 0
    models = {m.relpath: m for m in load_stack(out).models}
    assert set(models) == {"checkpoints/sd15.safetensors", "loras/both.safetensors"}
    own = files["install's lora"].read_bytes()  # no shared folder before it now
    assert models["loras/both.safetensors"].sha256 == hashlib.sha256(own).hexdigest()
    assert "sub/ly.safetensors: used by a workflow but in none" in capsys.readouterr().err
    (comfy / "extra_model_paths.yaml").write_text("a111: [unclosed\n")
    assert stack_main(["freeze", "--comfyui", str(comfy), "--workflow", str(flow)]) == 1
    assert "cannot read" in capsys.readouterr().err
