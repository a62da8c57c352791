"""Turn a submitted job into the prompt the worker's ComfyUI will run.

Three steps, all pure apart from reading model lists:
- apply `inputs` overrides to the workflow, refusing unknown node ids;
- point every reference to a shipped media file at a folder named by its
  content (`remote_exec/<sha256>/<name>`, keeping ComfyUI's ` [input]`
  annotation; a shipped `x.png [output]` becomes an input too). Concurrent
  jobs never see each other's files, and the same bytes get the same path
  every time, so ComfyUI's cache serves a re-run as it would locally. The
  user's own value is kept in the node's `_meta` (`USER_VALUES`), where the
  worker's ComfyUI hook (`comfyui_nodes/`) puts it back into the `prompt`
  that nodes save as metadata;
- find model files the worker does not have before ComfyUI runs anything, and
  name each with its folder and what the worker has there (ComfyUI itself
  does not check every loader's list).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from ...errors import BadRequest
from ...protocol import InputOverride, media_name, split_annotation
from ...protocol.catalog import combo_options
from ...protocol.models import CLASS_FOLDERS, FIELD_FOLDERS

JOB_INPUT_ROOT = "remote_exec"
# Key in a node's `_meta`: {input name: the value the user's workflow had}.
USER_VALUES = "remote_exec_user_inputs"
MODEL_EXTS = {".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".gguf",
              ".onnx", ".pkl"}


def input_prefix(sha256: str) -> str:
    """The input subfolder holding the file with these bytes."""
    return f"{JOB_INPUT_ROOT}/{sha256}"


def apply_overrides(workflow: dict[str, Any], overrides: Iterable[InputOverride],
                    values: dict[int, Any]) -> dict[str, Any]:
    """A copy of `workflow` with each override set; `values[i]` replaces override i's value."""
    out = copy.deepcopy(workflow)
    for i, ov in enumerate(overrides):
        node = out.get(ov.node)
        if node is None:
            raise BadRequest(f"inputs[{i}]: node {ov.node!r} is not in the workflow "
                             f"(its nodes are {', '.join(sorted(out))})",
                             code="unknown_node_id", node_id=ov.node)
        node.setdefault("inputs", {})[ov.field] = values.get(i, ov.value)
    return out


def rewrite_media_refs(workflow: dict[str, Any], media: Mapping[str, str]) -> dict[str, Any]:
    """Point string inputs naming a shipped file (`media`: name -> sha256) at its
    content's input folder, remembering the user's value in `_meta` (in place)."""
    if not media:
        return workflow
    for node in workflow.values():
        inputs = node.get("inputs") or {}
        for key, value in inputs.items():
            if not isinstance(value, str):
                continue
            bare, suffix, folder = split_annotation(value)
            name = media_name(bare.replace("\\", "/"), folder)
            sha = media.get(name)
            if sha is None:
                continue
            inputs[key] = (f"{input_prefix(sha)}/{name}"
                           f"{suffix if folder == 'input' else ' [input]'}")
            meta = node.get("_meta")
            if not isinstance(meta, dict):
                meta = node["_meta"] = {}
            meta.setdefault(USER_VALUES, {})[key] = value
    return workflow


def _model_like(value: object) -> bool:
    return isinstance(value, str) and PurePosixPath(value).suffix.lower() in MODEL_EXTS


def find_missing_models(workflow: dict[str, Any],
                        object_info: dict[str, Any]) -> list[dict[str, Any]]:
    """Model files the workflow names that the worker's ComfyUI does not list."""
    missing = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type", "")
        declared = (object_info.get(class_type) or {}).get("input") or {}
        specs = {**(declared.get("optional") or {}), **(declared.get("required") or {})}
        for field, value in (node.get("inputs") or {}).items():
            raw = combo_options(specs.get(field))
            if raw is None or not _model_like(value):
                continue
            options = [str(o) for o in raw]
            if value in options:
                continue
            folder = FIELD_FOLDERS.get(field) or CLASS_FOLDERS.get(class_type) or "models"
            missing.append({"node_id": str(node_id), "node_type": class_type, "input": field,
                            "model": value, "folder": folder, "available": options})
    return missing


def missing_model_error(missing: list[dict[str, Any]]) -> BadRequest:
    first = missing[0]
    have = ", ".join(first["available"]) or "nothing"
    message = (f"missing model {first['model']!r} for node {first['node_id']} "
               f"({first['node_type']}.{first['input']}): the worker's {first['folder']} "
               f"folder has {have}")
    return BadRequest(message, code="missing_model", node_id=first["node_id"],
                      node_type=first["node_type"], details={"missing_models": missing})
