"""The local UI's view with remote mode on: the local install's and the remote's.

Pure functions over ComfyUI's own JSON answers and a `RemoteCatalog`, so they
test without ComfyUI; `intercept` applies them to ComfyUI's responses.

- Node types (`/object_info`): the remote's types the local install lacks are
  added as the remote defines them. For a type both have, each loader COMBO
  gains the remote's model files: the input's COMBO in the remote's own
  object_info names the remote folder it lists (the folder whose listing holds
  most of its options), and that folder's files join the local options. Other
  inputs stay local (a COMBO of sampler names is not a model list).
- Model folders (`/models`, `/models/{folder}`, `/experiment/models`,
  `/experiment/models/{folder}`): the remote's folders and files join the
  local ones; a remote-only file has the size the remote reported.

Local entries always come first and are never changed; nothing is removed.
"""

from __future__ import annotations

import copy
from typing import Any

from ..protocol.catalog import RemoteCatalog, combo_options

SECTIONS = ("required", "optional")


def with_options(spec: list[Any], options: list[Any]) -> list[Any]:
    """`spec` (either COMBO form) with `options` in place of its own."""
    if isinstance(spec[0], list):
        return [options, *spec[1:]]
    return [spec[0], {**spec[1], "options": options}, *spec[2:]]


def merged(local: list[Any], extra: list[str]) -> list[Any]:
    """`local` with `extra`'s new names, sorted in as ComfyUI sorts a folder's files."""
    have = {x for x in local if isinstance(x, str)}
    new = [x for x in extra if x not in have]
    if not new:
        return local
    strings = [x for x in local if isinstance(x, str)]
    if len(strings) == len(local) and strings == sorted(strings):
        return sorted([*strings, *new])
    return [*local, *sorted(new)]


def remote_folder(options: list[Any], catalog: RemoteCatalog) -> str | None:
    """The remote folder a remote COMBO lists: the one holding most of its options."""
    names = {x for x in options if isinstance(x, str)}
    best, hits = None, 0
    for folder, entries in catalog.models.items():
        count = sum(1 for e in entries if e.name in names)
        if count > hits:
            best, hits = folder, count
    return best


def _inputs(node: object) -> dict[str, dict[str, Any]]:
    inputs = node.get("input") if isinstance(node, dict) else None
    if not isinstance(inputs, dict):
        return {}
    return {s: inputs[s] for s in SECTIONS if isinstance(inputs.get(s), dict)}


def merge_node(local: dict[str, Any], remote: dict[str, Any],
               catalog: RemoteCatalog) -> dict[str, Any]:
    """One node type both sides have: its loader COMBOs offer the remote's files too."""
    out: dict[str, Any] | None = None
    remote_inputs = _inputs(remote)
    for section, specs in _inputs(local).items():
        for name, spec in specs.items():
            mine = combo_options(spec)
            theirs = combo_options(remote_inputs.get(section, {}).get(name))
            if mine is None or not theirs:
                continue
            folder = remote_folder(theirs, catalog)
            if folder is None:
                continue
            options = merged(mine, catalog.names(folder))
            if options is mine:
                continue
            if out is None:
                out = copy.deepcopy(local)
            out["input"][section][name] = with_options(spec, options)
    return out if out is not None else local


def union_object_info(local: dict[str, Any], catalog: RemoteCatalog) -> dict[str, Any]:
    """`/object_info`: every local type (loaders offering the remote's files too), then
    the remote's types the local install lacks."""
    out = dict(local)
    for name, node in local.items():
        remote = catalog.object_info.get(name)
        if isinstance(node, dict) and isinstance(remote, dict):
            out[name] = merge_node(node, remote, catalog)
    for name, node in catalog.object_info.items():
        if name not in out:
            out[name] = node
    return out


def union_node_info(node_class: str, local: dict[str, Any],
                    catalog: RemoteCatalog) -> dict[str, Any]:
    """`/object_info/{node_class}`: ComfyUI's `{class: info}` or `{}`, with the remote's."""
    remote = catalog.object_info.get(node_class)
    if not isinstance(remote, dict):
        return local
    mine = local.get(node_class)
    if not isinstance(mine, dict):
        return {node_class: remote}
    return {node_class: merge_node(mine, remote, catalog)}


def union_folders(local: list[Any], catalog: RemoteCatalog) -> list[Any]:
    """`/models`: the local folder names, then the remote's others."""
    return [*local, *(f for f in catalog.models if f not in local)]


def union_files(local: list[Any] | None, folder: str, catalog: RemoteCatalog) -> list[Any]:
    """`/models/{folder}` (None: the local install has no such folder, a 404)."""
    return merged(list(local or []), catalog.names(folder))


def union_experiment_folders(local: list[Any], catalog: RemoteCatalog) -> list[Any]:
    """`/experiment/models`: `[{name, folders}]`, with the remote's other folders (no
    local directories)."""
    have = {f.get("name") for f in local if isinstance(f, dict)}
    return [*local, *({"name": f, "folders": []} for f in catalog.models
                      if f not in have and f not in ("configs", "custom_nodes"))]


def union_experiment_files(local: list[Any] | None, folder: str,
                           catalog: RemoteCatalog) -> list[Any]:
    """`/experiment/models/{folder}`: `[{name, pathIndex, modified, created, size}]`,
    with the remote's other files (`pathIndex` 0, times 0, the remote's size)."""
    out = list(local or [])
    have = {str(f.get("name", "")).replace("\\", "/") for f in out if isinstance(f, dict)}
    for entry in catalog.models.get(folder, []):
        if entry.name not in have:
            out.append({"name": entry.name, "pathIndex": 0, "modified": 0, "created": 0,
                        "size": entry.size})
    return out
