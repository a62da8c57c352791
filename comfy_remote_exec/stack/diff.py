"""`stack diff`: what a remote worker has that the stack file says, and what not.

It reads the worker's `GET /v1/object_info` (node types, each with the
`python_module` that says which custom node package it came from) and
`GET /v1/models` (`{"content_version", "folders": {folder: [{name, size}]}}`),
and compares them with the stack file:

- custom node packages: a stack package with no node type on the remote is
  missing (with the node types the stack recorded for it); one with some
  recorded types absent lists those; a package on the remote that the stack
  does not name is extra (the worker's own hook package excepted);
- models: a stack model absent from its folder is missing; one of another
  size differs; a remote model the stack does not list is extra.

Comparing names and sizes needs no hashing on either side; a size match is
taken as the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import RemoteExecError, RemoteUnavailable, Unauthorized
from .freeze import node_types_by_package
from .spec import Stack

WORKER_HOOKS = frozenset({"remote_exec_worker"})  # the worker's own ComfyUI hooks


@dataclass
class StackDiff:
    missing_nodes: dict[str, list[str]] = field(default_factory=dict)  # package: types
    missing_types: dict[str, list[str]] = field(default_factory=dict)  # package: types
    extra_nodes: dict[str, list[str]] = field(default_factory=dict)
    missing_models: list[str] = field(default_factory=list)  # folder/name
    wrong_size: list[tuple[str, int, int]] = field(default_factory=list)  # (model, has, wants)
    extra_models: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """Nothing the stack names is missing or different (extras are allowed)."""
        return not (self.missing_nodes or self.missing_types or self.missing_models
                    or self.wrong_size)

    def to_dict(self) -> dict[str, Any]:
        return {"same": self.same, "missing_nodes": self.missing_nodes,
                "missing_types": self.missing_types, "extra_nodes": self.extra_nodes,
                "missing_models": self.missing_models,
                "wrong_size": [list(w) for w in self.wrong_size],
                "extra_models": self.extra_models}


def compare(stack: Stack, object_info: Mapping[str, Any],
            models: Mapping[str, Any]) -> StackDiff:
    """The stack against a remote's object_info and `/v1/models` answer."""
    diff = StackDiff()
    remote = node_types_by_package(object_info)
    named = set()
    for node in stack.custom_nodes:
        key = node.name.lower()
        named.add(key)
        have = set(remote.get(key, ()))
        if not have:
            diff.missing_nodes[node.name] = list(node.node_types)
        elif node.node_types:
            absent = sorted(set(node.node_types) - have)
            if absent:
                diff.missing_types[node.name] = absent
    for package, types in sorted(remote.items()):
        if package not in named and package not in WORKER_HOOKS:
            diff.extra_nodes[package] = types
    folders = models.get("folders") if isinstance(models, Mapping) else None
    listing: dict[str, int] = {}
    for folder, entries in (folders or {}).items():
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                listing[f"{folder}/{entry['name']}"] = int(entry.get("size") or 0)
    for model in stack.models:
        size = listing.get(model.relpath)
        if size is None:
            diff.missing_models.append(model.relpath)
        elif model.size is not None and size != model.size:
            diff.wrong_size.append((model.relpath, size, model.size))
    wanted = {m.relpath for m in stack.models}
    diff.extra_models = sorted(k for k in listing if k not in wanted)
    return diff


def fetch_remote(url: str, token: str | None, client: httpx.Client | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A worker's `/v1/object_info` and `/v1/models`."""
    http = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers = []
    try:
        for path in ("/v1/object_info", "/v1/models"):
            try:
                resp = http.get(url.rstrip("/") + path, headers=headers)
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"{url}: {exc}") from exc
            if resp.status_code == 401:
                raise Unauthorized(f"{url} refused the token (set REMOTE_EXEC_TOKEN, "
                                   "or --token-env)")
            if resp.status_code != 200:
                raise RemoteExecError(f"{url}{path} answered {resp.status_code}: "
                                      f"{resp.text[:200]}", status=resp.status_code)
            answers.append(resp.json())
    finally:
        if client is None:
            http.close()
    return answers[0], answers[1]


def report(diff: StackDiff) -> str:
    lines: list[str] = []
    for package, types in diff.missing_nodes.items():
        lines.append(f"missing custom node {package}"
                     + (f" (node types: {', '.join(types)})" if types else ""))
    for package, types in diff.missing_types.items():
        lines.append(f"custom node {package} lacks node types: {', '.join(types)}")
    for relpath in diff.missing_models:
        lines.append(f"missing model {relpath}")
    for relpath, has, wants in diff.wrong_size:
        lines.append(f"model {relpath}: {has} bytes on the remote, the stack says {wants}")
    for package, types in diff.extra_nodes.items():
        lines.append(f"extra custom node {package} (node types: {', '.join(types)})")
    for relpath in diff.extra_models:
        lines.append(f"extra model {relpath}")
    if diff.same:
        lines.insert(0, "the remote has everything the stack names")
    return "\n".join(lines)
