"""What a remote offers: its node types and model files, under one version.

Both sides share these values. The worker lists its models (`GET /v1/models`)
and versions what it offers (`content_version`: a short digest over its
object_info and its model listing, which changes when a model file or a node
type appears or disappears); the extension keeps a `RemoteCatalog` so that
its UI can offer the remote's models and nodes without asking again, and
asks again only when the remote reports another version.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest
from .common import as_object, safe_relpath

VERSION_CHARS = 16  # hex digits of a content_version


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model file: its name as ComfyUI lists it (relative, with `/`) and its size."""

    name: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size}

    @classmethod
    def from_dict(cls, raw: object) -> ModelEntry:
        obj = as_object(raw, "a model entry")
        name, size = obj.get("name"), obj.get("size", 0)
        safe_relpath(name, what="model name")  # a hostile remote's names go no further
        assert isinstance(name, str)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            size = 0
        return cls(name, size)


Models = dict[str, list[ModelEntry]]


def combo_options(spec: object) -> list[Any] | None:
    """A COMBO input's options in object_info, in either form ComfyUI writes it
    (`[[opts...], {...}]`, or v3's `["COMBO", {"options": [...]}]`); None for
    another input."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def models_to_dict(models: Mapping[str, list[ModelEntry]]) -> dict[str, Any]:
    return {folder: [e.to_dict() for e in entries] for folder, entries in models.items()}


def models_from_dict(raw: object) -> Models:
    obj = as_object(raw, "the model folders")
    out: Models = {}
    for folder, entries in obj.items():
        if isinstance(entries, list):
            out[str(folder)] = [ModelEntry.from_dict(e) for e in entries]
    return out


def content_version(object_info: Mapping[str, Any],
                    models: Mapping[str, list[ModelEntry]]) -> str:
    """The short hex digest of what a remote offers (stable across key order)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(object_info, sort_keys=True, separators=(",", ":"),
                             default=str).encode())
    digest.update(b"\0")
    listing = {f: sorted((e.name, e.size) for e in entries) for f, entries in models.items()}
    digest.update(json.dumps(listing, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:VERSION_CHARS]


@dataclass(frozen=True)
class RemoteCatalog:
    """A remote's node definitions and model files, as of `content_version`."""

    content_version: str
    object_info: dict[str, Any] = field(default_factory=dict)
    models: Models = field(default_factory=dict)

    def names(self, folder: str) -> list[str]:
        return [e.name for e in self.models.get(folder, [])]

    def to_dict(self) -> dict[str, Any]:
        return {"content_version": self.content_version, "object_info": self.object_info,
                "models": models_to_dict(self.models)}

    @classmethod
    def from_dict(cls, raw: object) -> RemoteCatalog:
        obj = as_object(raw, "the remote catalog")
        version = obj.get("content_version")
        if not isinstance(version, str) or not version:
            raise BadRequest("the remote catalog has no content_version", code="invalid_catalog")
        info = obj.get("object_info")
        return cls(version, dict(info) if isinstance(info, dict) else {},
                   models_from_dict(obj.get("models") or {}))


# -- over RunPod: the catalog as a job's answer ----------------------------------------
#
# A RunPod backend cannot reach the worker's routes, so it asks with a job:
# `{"action": "describe", "known_version": v|null}` answers `{"content_version",
# "unchanged": true}` while the version is `v`, else the catalog as gzipped JSON in
# base64, in one or more stream chunks `{"catalog_gz": <part>, "part": i, "parts": n}`
# (a chunk stays under RunPod's 1 MB); `{"action": "model_hashes", "folder", "names"}`
# answers `{"hashes": {...}}`.

DESCRIBE = "describe"
MODEL_HASHES = "model_hashes"


def pack_catalog(catalog: RemoteCatalog, part_chars: int) -> list[dict[str, Any]]:
    """The catalog as the stream chunks of a `describe` answer."""
    data = base64.b64encode(gzip.compress(json.dumps(catalog.to_dict(),
                                                     separators=(",", ":")).encode(), 6))
    text = data.decode("ascii")
    parts = max(1, -(-len(text) // part_chars))
    return [{"content_version": catalog.content_version, "part": i, "parts": parts,
             "catalog_gz": text[i * part_chars:(i + 1) * part_chars]} for i in range(parts)]


def unpack_catalog(chunks: list[object]) -> RemoteCatalog | None:
    """A `describe` answer's chunks as the catalog; None when it said `unchanged`."""
    got: dict[int, str] = {}
    parts = 1
    for chunk in chunks:
        obj = as_object(chunk, "the describe answer")
        if obj.get("unchanged"):
            return None
        data, part, count = obj.get("catalog_gz"), obj.get("part", 0), obj.get("parts", 1)
        if isinstance(data, str) and isinstance(part, int) and isinstance(count, int):
            got[part], parts = data, count
    if not got or any(i not in got for i in range(parts)):
        raise BadRequest(f"the describe answer came with {len(got)} of {parts} parts",
                         code="invalid_catalog")
    raw = gzip.decompress(base64.b64decode("".join(got[i] for i in range(parts))))
    return RemoteCatalog.from_dict(json.loads(raw))
