"""What a client submits: the job spec, its media and its input overrides.

`JobSpec` is the body of `POST /v1/jobs` (and of a RunPod job's input): the
workflow in ComfyUI's API format, inputs as inline base64, URLs or blob
hashes, and ComfyUI's own `extra_data`. The shapes are those of the job API
existing clients speak (`shared/specs/job-apis.md`), with our fields beside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import PayloadTooLarge
from .common import MAX_MEDIA_ITEMS, as_dict, is_sha256, require, safe_relpath

INPUT_TYPES = ("raw", "image_base64", "image_url")


@dataclass
class MediaItem:
    """One input file: inline base64 `data`, a `url` to fetch, or a blob `sha256`."""

    name: str
    data: str | None = None
    url: str | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, raw: object, index: int) -> MediaItem:
        where = f"media[{index}]"
        raw = as_dict(raw, where)
        name = safe_relpath(raw.get("name"), what=f"{where}.name")
        sources = [k for k in ("data", "url", "sha256") if raw.get(k) is not None]
        require(len(sources) == 1, f"{where} needs exactly one of data, url or sha256")
        sha = raw.get("sha256")
        if sha is not None:
            require(is_sha256(sha), f"{where}.sha256 must be 64 lowercase hex digits")
        url = raw.get("url")
        if url is not None:
            require(isinstance(url, str), f"{where}.url must be a string")
        data = raw.get("data")
        if data is not None:
            require(isinstance(data, str), f"{where}.data must be a base64 string")
        return cls(name=name, data=data, url=url, sha256=sha)


@dataclass
class InputOverride:
    """Set `workflow[node].inputs[field]`; image types upload the value first."""

    node: str
    field: str
    value: Any
    type: str = "raw"
    name: str | None = None

    @classmethod
    def parse(cls, raw: object, index: int) -> InputOverride:
        where = f"inputs[{index}]"
        raw = as_dict(raw, where)
        node, fld = raw.get("node"), raw.get("field")
        require(isinstance(node, (str, int)) and str(node) != "", f"{where}.node is required")
        require(isinstance(fld, str) and fld != "", f"{where}.field is required")
        kind = raw.get("type", "raw")
        require(kind in INPUT_TYPES, f"{where}.type must be one of {', '.join(INPUT_TYPES)}")
        require("value" in raw, f"{where}.value is required")
        name = raw.get("name")
        if name is not None:
            name = safe_relpath(name, what=f"{where}.name")
        return cls(node=str(node), field=str(fld), value=raw["value"], type=kind, name=name)


@dataclass
class JobSpec:
    """What a client submits. `workflow` is ComfyUI's API format."""

    workflow: dict[str, Any]
    inputs: list[InputOverride] = field(default_factory=list)
    media: list[MediaItem] = field(default_factory=list)
    webhook_url: str | None = None
    priority: int = 0
    user_id: str | None = None
    partial_execution_targets: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # ComfyUI's own `extra_data` for the prompt (e.g. `extra_pnginfo`, which puts the
    # editor's `workflow` into saved files); the worker's `client_id` always wins.
    extra_data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: object) -> JobSpec:
        raw = as_dict(raw, "the request body")
        workflow = raw.get("workflow")
        require(workflow is not None, "'workflow' is required (ComfyUI API format)")
        require(isinstance(workflow, dict) and bool(workflow),
                 "'workflow' must be a non-empty object mapping node ids to nodes")
        assert isinstance(workflow, dict)
        for node_id, node in workflow.items():
            require(isinstance(node, dict) and isinstance(node.get("class_type"), str),
                     f"node {node_id!r} must be an object with a 'class_type'",
                     node_id=str(node_id))
            require(isinstance(node.get("inputs", {}), dict),
                     f"node {node_id!r}: 'inputs' must be an object", node_id=str(node_id))
        media_raw = raw.get("media") or []
        require(isinstance(media_raw, list), "'media' must be a list")
        if len(media_raw) > MAX_MEDIA_ITEMS:
            raise PayloadTooLarge(f"at most {MAX_MEDIA_ITEMS} media items per job",
                                  code="too_many_media")
        media = [MediaItem.parse(m, i) for i, m in enumerate(media_raw)]
        names = [m.name for m in media]
        require(len(set(names)) == len(names), "media names must be unique")
        inputs_raw = raw.get("inputs") or []
        require(isinstance(inputs_raw, list), "'inputs' must be a list")
        inputs = [InputOverride.parse(x, i) for i, x in enumerate(inputs_raw)]
        priority = raw.get("priority", 0)
        require(isinstance(priority, int) and not isinstance(priority, bool),
                 "'priority' must be an integer")
        webhook = raw.get("webhook_url")
        require(webhook is None or isinstance(webhook, str), "'webhook_url' must be a string")
        user_id = raw.get("user_id")
        require(user_id is None or isinstance(user_id, str), "'user_id' must be a string")
        targets = raw.get("partial_execution_targets")
        require(targets is None or (isinstance(targets, list)
                                     and all(isinstance(t, str) for t in targets)),
                 "'partial_execution_targets' must be a list of node ids")
        extra = raw.get("extra") or {}
        require(isinstance(extra, dict), "'extra' must be an object")
        extra_data = raw.get("extra_data") or {}
        require(isinstance(extra_data, dict), "'extra_data' must be an object")
        return cls(workflow=workflow, inputs=inputs, media=media, webhook_url=webhook,
                   priority=priority, user_id=user_id, partial_execution_targets=targets,
                   extra=extra, extra_data=extra_data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body; empty fields are left out, but an empty target list is kept
        (ComfyUI refuses it with `prompt_no_outputs`, which is not the same as none)."""
        out = {k: v for k, v in asdict(self).items() if v not in (None, [], {})}
        if self.media:
            out["media"] = [{k: v for k, v in asdict(m).items() if v is not None}
                            for m in self.media]
        if self.inputs:
            out["inputs"] = [{k: v for k, v in asdict(i).items() if v is not None}
                             for i in self.inputs]
        if self.partial_execution_targets is not None:
            out["partial_execution_targets"] = list(self.partial_execution_targets)
        return out | {"workflow": self.workflow}
