"""Preflight: check a prompt against what the remote offers before any GPU time.

With remote mode on and the remote's catalog cached (its object_info and model
lists, `extension.catalog`), a prompt is checked here, with no round trip:
- a node type the remote does not know is refused as ComfyUI refuses it
  (`missing_node_type`, prompt-level, 400);
- a model value missing from the remote's list becomes a `ShipNeed` when this
  machine has the file and it is small enough to ship with the run
  (`RemoteExec.ShipModelsMaxGB`); otherwise it is a `value_not_in_list` node
  error naming the file, what the remote has in that folder, and, for a file
  too big, the command that ships it once;
- a model the remote has under the same name with other bytes is a
  `model_conflict` node error. Sizes tell most apart at once; same-size files
  are compared by sha256 (`conflicts`: the local hash cache, and the remote's
  hashes asked once per content version).
`preflight` and `conflicts` are pure over their arguments (a catalog-like
value, a local model lookup, a hash lookup), so they test without ComfyUI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadRequest
from ..protocol.catalog import combo_options
from ..protocol.models import CLASS_FOLDERS, FIELD_FOLDERS, MODEL_FOLDERS, check_model_name
from .shipping import ShipNeed
from .validation import is_model_value

SYNC_COMMAND = "python -m comfy_remote_exec models sync --folder {folder}"
LIST_SHOWN = 20  # remote names quoted in an error (ComfyUI quotes up to 20 options)


class ModelEntryLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...


class CatalogLike(Protocol):
    """What preflight reads of `protocol.catalog.RemoteCatalog`."""

    @property
    def content_version(self) -> str: ...

    @property
    def object_info(self) -> dict[str, Any]: ...

    @property
    def models(self) -> Mapping[str, Sequence[ModelEntryLike]]: ...


# (folder, name) -> the local file, or None (the Host's folder_paths lookup)
LocalModels = Callable[[str, str], Path | None]


@dataclass(frozen=True)
class SameSize:
    """A model both sides have under one name and one size: compare their hashes."""

    node_id: str
    input_name: str
    folder: str
    name: str
    local_path: Path


@dataclass
class Preflight:
    error: dict[str, Any] | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)
    ship: list[ShipNeed] = field(default_factory=list)
    compare: list[SameSize] = field(default_factory=list)
    ship_nodes: dict[str, str] = field(default_factory=dict)  # "folder/name" -> node id

    @property
    def ok(self) -> bool:
        return self.error is None and not self.node_errors

    def refusal(self) -> dict[str, Any]:
        """The 400 body, in ComfyUI's shape."""
        error = self.error
        if error is None:
            details = "\n".join(f"{e['message']}: {e['details']}"
                                for info in self.node_errors.values() for e in info["errors"])
            error = {"type": "prompt_outputs_failed_validation",
                     "message": "Prompt outputs failed validation", "details": details,
                     "extra_info": {}}
        return {"error": error, "node_errors": self.node_errors}


def input_spec(info: Mapping[str, Any], name: str) -> object:
    inputs = info.get("input") or {}
    for group in ("required", "optional"):
        section = inputs.get(group) or {}
        if isinstance(section, dict) and name in section:
            return section[name]
    return None


def model_folder(catalog: CatalogLike, class_type: str, input_name: str,
                 options: Sequence[str], local: LocalModels, value: str) -> str | None:
    """The model folder behind a loader's input: its field's or class's known folder,
    else the remote folder whose listing its options come from, else the local
    folder that holds `value`."""
    known = CLASS_FOLDERS.get(class_type) or FIELD_FOLDERS.get(input_name)
    if known is not None:
        return known
    wanted = set(options)
    best, overlap = None, 0
    for folder, entries in catalog.models.items():
        hits = len(wanted & {e.name for e in entries})
        if hits > overlap:
            best, overlap = folder, hits
    if best is not None:
        return best
    return next((f for f in sorted(MODEL_FOLDERS) if local(f, value) is not None), None)


def dependent_outputs(prompt: Mapping[str, Any], object_info: Mapping[str, Any],
                      node_id: str) -> list[str]:
    """The output nodes downstream of `node_id` (itself included)."""
    users: dict[str, set[str]] = {}
    for nid, node in prompt.items():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                users.setdefault(value[0], set()).add(str(nid))
    seen, todo = {node_id}, [node_id]
    while todo:
        for nxt in users.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return sorted(n for n in seen if (object_info.get(prompt[n].get("class_type")) or {})
                  .get("output_node"))


def _error(kind: str, message: str, input_name: str, value: str, details: str,
           **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": f"{input_name}: {details}",
            "extra_info": {"input_name": input_name, "input_config": None,
                           "received_value": value, **extra}}


def _listing(names: Sequence[str]) -> str:
    if not names:
        return "nothing"
    if len(names) > LIST_SHOWN:
        return f"(list of length {len(names)})"
    return str(list(names))


def preflight(prompt: Mapping[str, Any], catalog: CatalogLike, local: LocalModels, *,
              max_ship_bytes: int, can_ship: bool = True) -> Preflight:
    """Check `prompt` against the remote's `catalog` (see the module's docstring)."""
    result = Preflight()
    info = catalog.object_info
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        if class_type not in info:
            title = (node.get("_meta") or {}).get("title", class_type)
            result.error = {
                "type": "missing_node_type",
                "message": f"Node '{title}' not found on the remote. The custom node may "
                           "not be installed there.",
                "details": f"Node ID '#{node_id}'",
                "extra_info": {"node_id": node_id, "class_type": class_type,
                               "node_title": title}}
            result.node_errors = {}
            return result
        errors = []
        for input_name, value in (node.get("inputs") or {}).items():
            if not is_model_value(value):
                continue
            raw = combo_options(input_spec(info[class_type], input_name))
            if raw is None:
                continue
            options = [str(o) for o in raw]
            folder = model_folder(catalog, class_type, input_name, options, local, value)
            if folder is None:
                continue
            error = _check_value(result, str(node_id), input_name, value, folder, options,
                                 catalog, local, max_ship_bytes, can_ship)
            if error is not None:
                errors.append(error)
        if errors:
            result.node_errors[str(node_id)] = {
                "errors": errors, "class_type": class_type,
                "dependent_outputs": dependent_outputs(prompt, info, str(node_id))}
    return result


def _check_value(result: Preflight, node_id: str, input_name: str, value: str, folder: str,
                 options: Sequence[str], catalog: CatalogLike, local: LocalModels,
                 max_ship_bytes: int, can_ship: bool) -> dict[str, Any] | None:
    remote = {e.name: e.size for e in catalog.models.get(folder, [])}
    path = local(folder, value)
    if value in options or value in remote:
        if path is not None and value in remote:
            size = path.stat().st_size
            if remote[value] and size != remote[value]:
                return conflict_error(input_name, value, folder, path)
            result.compare.append(SameSize(node_id, input_name, folder, value, path))
        return None
    names = sorted(remote) or list(options)
    where = f"the remote's {folder} folder has {_listing(names)}"
    if path is None:
        return _error("value_not_in_list", "Value not in list", input_name, value,
                      f"'{value}' not on the remote, nor on this machine: {where}",
                      folder=folder, remote_models=names[:LIST_SHOWN])
    size = path.stat().st_size
    command = SYNC_COMMAND.format(folder=folder)
    if not can_ship:
        return _error("value_not_in_list", "Value not in list", input_name, value,
                      f"'{value}' is not on the remote ({where}), and this backend cannot "
                      f"ship models: put it in the remote's {folder} folder",
                      folder=folder, remote_models=names[:LIST_SHOWN])
    if size > max_ship_bytes:
        return _error("value_not_in_list", "Value not in list", input_name, value,
                      f"'{value}' is not on the remote ({where}); at {size / 1024**3:.1f} GB "
                      f"it is over RemoteExec.ShipModelsMaxGB "
                      f"({max_ship_bytes / 1024**3:g} GB) to ship with a run: ship it once "
                      f"with `{command}`", folder=folder, remote_models=names[:LIST_SHOWN],
                      size=size, command=command)
    try:
        check_model_name(value)
    except BadRequest as exc:
        return _error("value_not_in_list", "Value not in list", input_name, value,
                      f"'{value}' is not on the remote ({where}), and cannot be shipped "
                      f"under that name: {exc.message}", folder=folder)
    key = f"{folder}/{value}"
    if key not in result.ship_nodes:
        result.ship.append(ShipNeed(folder, value, path, size))
        result.ship_nodes[key] = node_id
    return None


def conflict_error(input_name: str, value: str, folder: str, path: Path) -> dict[str, Any]:
    return _error("model_conflict", "Model differs on the remote", input_name, value,
                  f"'{value}' in the remote's {folder} folder has other bytes than this "
                  f"machine's {path}; it is never overwritten: rename the local file, or "
                  "remove the remote one", folder=folder)


# The remote's hashes where asking is free; None: unknown (a same-size file is trusted).
RemoteHashes = Callable[[str, list[str]], Awaitable[Mapping[str, str | None] | None]]
LocalHash = Callable[[Path], str]


async def conflicts(result: Preflight, prompt: Mapping[str, Any], catalog: CatalogLike,
                    remote_hashes: RemoteHashes | None, local_hash: LocalHash,
                    known: dict[tuple[str, str, str], str | None]) -> None:
    """Compare the same-name, same-size models by sha256, adding `model_conflict` node
    errors. `known` keeps the remote's hashes by (content_version, folder, name), so a
    warm cache asks the remote nothing."""
    if not result.compare or remote_hashes is None:
        return
    version = catalog.content_version
    wanted: dict[str, list[str]] = {}
    for same in result.compare:
        if (version, same.folder, same.name) not in known:
            wanted.setdefault(same.folder, []).append(same.name)
    for folder, names in wanted.items():
        got = await remote_hashes(folder, sorted(set(names))) or {}
        for name in names:
            known[(version, folder, name)] = got.get(name)
    for same in result.compare:
        remote = known.get((version, same.folder, same.name))
        if remote is None or remote == await asyncio.to_thread(local_hash, same.local_path):
            continue
        entry = result.node_errors.setdefault(same.node_id, {
            "errors": [], "class_type": prompt[same.node_id].get("class_type"),
            "dependent_outputs": dependent_outputs(prompt, catalog.object_info, same.node_id)})
        entry["errors"].append(conflict_error(same.input_name, same.name, same.folder,
                                              same.local_path))


def needs_to_json(needs: Iterable[ShipNeed], nodes: Mapping[str, str]) -> list[dict[str, Any]]:
    """ShipNeeds as the job's journal keeps them (with the loader node to show progress on)."""
    return [{"folder": n.folder, "name": n.name, "path": str(n.local_path), "size": n.size,
             "node": nodes.get(f"{n.folder}/{n.name}")} for n in needs]


def needs_from_json(raw: object) -> list[tuple[ShipNeed, str | None]]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            out.append((ShipNeed(str(item["folder"]), str(item["name"]), Path(item["path"]),
                                 int(item["size"])), item.get("node")))
    return out
