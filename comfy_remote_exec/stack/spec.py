"""The stack file: what a remote worker image holds, and how to install it.

`deploy/stack.yaml` lists the pinned ComfyUI, the custom nodes (each at a full
commit sha) and the models with their download URLs. Every image (the RunPod
Dockerfile, the Modal app) is built from that one file, so they cannot drift.
This module parses and checks it, and turns the custom nodes into the git and
pip commands that install them. Downloading models is `download`; the
command line is `python -m comfy_remote_exec.stack` (see `cli`).

A custom node is a git repository at a commit (`repo`, `ref`), or a Comfy
Registry package at a version (`registry`, `version`) for a node installed
from the registry without git; `node_types` optionally lists the node types
it provides (`stack freeze` records them, `stack diff` compares them). A
model without a known download URL (frozen from a local file) says so with
`needs_url: true` instead of a `url`: `show` and the downloads report it.

Standard library and pyyaml only: it runs inside image builds.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import BadRequest, RemoteExecError
from ..protocol import safe_relpath

_SHA1 = re.compile(r"[0-9a-fA-F]{40}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REPO_SCHEMES = ("https://", "file://")
_URL_SCHEMES = ("https://", "http://")
_REGISTRY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+-]{0,63}")


class StackError(BadRequest):
    """The stack file is malformed; the message names the entry and the field."""

    code = "bad_stack"


class InstallError(RemoteExecError):
    code = "install_failed"


@dataclass(frozen=True)
class ComfyUISource:
    repo: str
    ref: str


@dataclass(frozen=True)
class CustomNode:
    name: str
    repo: str | None = None  # a git repository at `ref`, or
    ref: str | None = None
    recursive: bool = False
    registry: str | None = None  # a Comfy Registry package at `version`
    version: str | None = None
    node_types: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        """Where it comes from, in one line."""
        if self.registry is not None:
            return f"registry {self.registry}@{self.version}"
        return f"{(self.ref or '')[:12]}  {self.repo}"


@dataclass(frozen=True)
class Model:
    name: str
    url: str | None  # None: `needs_url`, no download URL known yet
    folder: str
    size: int | None = None
    sha256: str | None = None
    token_env: str | None = None

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}"

    def path(self, volume_dir: str | os.PathLike[str]) -> Path:
        return Path(volume_dir, "models", self.folder, self.name)


@dataclass(frozen=True)
class Stack:
    comfyui: ComfyUISource
    custom_nodes: tuple[CustomNode, ...]
    models: tuple[Model, ...]

    def select(self, names: Iterable[str]) -> tuple[Model, ...]:
        """The models named (by `name` or `folder/name`), in stack order."""
        wanted = set(names)
        known = {m.name for m in self.models} | {m.relpath for m in self.models}
        unknown = sorted(wanted - known)
        if unknown:
            raise StackError(f"no model named {', '.join(unknown)} in the stack; it has: "
                             + ", ".join(m.name for m in self.models))
        return tuple(m for m in self.models if m.name in wanted or m.relpath in wanted)


def load_stack(path: str | os.PathLike[str]) -> Stack:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StackError(f"cannot read the stack file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StackError(f"{path} is not valid YAML: {exc}") from exc
    return parse_stack(data, where=str(path))


def parse_stack(data: Any, *, where: str = "stack file") -> Stack:
    top = _mapping(data, where, required=("comfyui",),
                   optional=("custom_nodes", "models"))
    comfy = _mapping(top["comfyui"], f"{where}: comfyui", required=("repo", "ref"))
    comfyui = ComfyUISource(repo=_repo(comfy["repo"], f"{where}: comfyui.repo"),
                            ref=_plain_ref(comfy["ref"], f"{where}: comfyui.ref"))
    nodes = tuple(_node(item, f"{where}: custom_nodes[{i}]")
                  for i, item in enumerate(_list(top.get("custom_nodes"), where, "custom_nodes")))
    models = tuple(_model(item, f"{where}: models[{i}]")
                   for i, item in enumerate(_list(top.get("models"), where, "models")))
    _unique([n.name for n in nodes], f"{where}: custom node")
    _unique([m.relpath for m in models], f"{where}: model")
    return Stack(comfyui=comfyui, custom_nodes=nodes, models=models)


def _node(item: Any, where: str) -> CustomNode:
    where = _label(item, where)
    if isinstance(item, dict) and "registry" in item:
        return _registry_node(item, where)
    d = _mapping(item, where, required=("name", "repo", "ref"),
                 optional=("recursive", "node_types"))
    name = _node_name(d, where)
    ref = _str(d["ref"], f"{where}: ref")
    if not _SHA1.fullmatch(ref):
        raise StackError(f"{where}: ref {ref!r} must be a full 40-character commit sha, "
                         "so the image is reproducible")
    recursive = d.get("recursive", False)
    if not isinstance(recursive, bool):
        raise StackError(f"{where}: recursive must be true or false")
    return CustomNode(name=name, repo=_repo(d["repo"], f"{where}: repo"), ref=ref.lower(),
                      recursive=recursive, node_types=_node_types(d, where))


def _registry_node(item: dict[str, Any], where: str) -> CustomNode:
    d = _mapping(item, where, required=("name", "registry", "version"),
                 optional=("node_types",))
    name = _node_name(d, where)
    registry = _str(d["registry"], f"{where}: registry")
    if not _REGISTRY_ID.fullmatch(registry):
        raise StackError(f"{where}: registry {registry!r} is not a Comfy Registry node id")
    version = d["version"]
    version = _str(str(version) if isinstance(version, (int, float)) else version,
                   f"{where}: version")
    if not _VERSION.fullmatch(version):
        raise StackError(f"{where}: version {version!r} must be a release such as 1.2.3")
    return CustomNode(name=name, registry=registry, version=version,
                      node_types=_node_types(d, where))


def _node_name(d: dict[str, Any], where: str) -> str:
    name = _relpath(_str(d["name"], f"{where}: name"), f"{where}: name")
    if "/" in name:
        raise StackError(f"{where}: name must be a single folder name, not a path")
    return name


def _node_types(d: dict[str, Any], where: str) -> tuple[str, ...]:
    types = _list(d.get("node_types"), where, "node_types")
    if not all(isinstance(t, str) and t.strip() for t in types):
        raise StackError(f"{where}: node_types must be a list of node type names")
    return tuple(types)


def _model(item: Any, where: str) -> Model:
    where = _label(item, where)
    d = _mapping(item, where, required=("name", "folder"),
                 optional=("url", "needs_url", "size", "sha256", "token_env"))
    name = _relpath(_str(d["name"], f"{where}: name"), f"{where}: name")
    folder = _relpath(_str(d["folder"], f"{where}: folder"), f"{where}: folder")
    needs_url = d.get("needs_url", False)
    if not isinstance(needs_url, bool):
        raise StackError(f"{where}: needs_url must be true or false")
    url: str | None = None
    if d.get("url") is not None:
        url = _str(d["url"], f"{where}: url")
        if not url.startswith(_URL_SCHEMES):
            raise StackError(f"{where}: url {url!r} must be an http(s) URL")
        if needs_url:
            raise StackError(f"{where}: has a url, so it cannot also say needs_url")
    elif not needs_url:
        raise StackError(f"{where}: missing url (or needs_url: true for a model without "
                         "a known download URL)")
    size = d.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise StackError(f"{where}: size must be a positive number of bytes")
    sha256 = d.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise StackError(f"{where}: sha256 must be 64 hex characters")
    token_env = d.get("token_env")
    if token_env is not None and not (isinstance(token_env, str)
                                      and _ENV_NAME.fullmatch(token_env)):
        raise StackError(f"{where}: token_env must be an environment variable name")
    return Model(name=name, url=url, folder=folder, size=size,
                 sha256=sha256.lower() if sha256 else None, token_env=token_env)


def _label(item: Any, where: str) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and name.strip() and name.isprintable():
        return f"{where} ({name})"
    return where


def _mapping(value: Any, where: str, *, required: Sequence[str],
             optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StackError(f"{where} must be a mapping")
    missing = [k for k in required if value.get(k) is None]
    if missing:
        raise StackError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(str(k) for k in value if k not in (*required, *optional))
    if unknown:
        raise StackError(f"{where}: unknown field {', '.join(unknown)}")
    return value


def _list(value: Any, where: str, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise StackError(f"{where}: {key} must be a list")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StackError(f"{where} must be a non-empty string")
    return value.strip()


def _relpath(value: str, what: str) -> str:
    try:
        return safe_relpath(value, what=what)
    except BadRequest as exc:
        raise StackError(exc.message) from exc


def _repo(value: Any, where: str) -> str:
    repo = _str(value, where)
    if not repo.startswith(_REPO_SCHEMES):
        raise StackError(f"{where}: {repo!r} must be an https:// git URL")
    return repo


def _plain_ref(value: Any, where: str) -> str:
    ref = _str(value, where)
    if ref.startswith("-") or any(ch.isspace() for ch in ref):
        raise StackError(f"{where}: {ref!r} is not a git tag, branch or sha")
    return ref


def _unique(keys: list[str], what: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise StackError(f"{what} {key!r} is listed twice")
        seen.add(key)


# Installing custom nodes ---------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One step; `only_if` / `unless` name a path whose existence decides if it runs."""

    argv: tuple[str, ...]
    only_if: Path | None = None
    unless: Path | None = None

    def __str__(self) -> str:
        return shlex.join(self.argv)


def default_installer(python: str = sys.executable,
                      which: Callable[[str], str | None] = shutil.which) -> tuple[str, ...]:
    """`uv pip install` into `python` when uv is on PATH, else that Python's pip."""
    uv = which("uv")
    if uv:
        return (uv, "pip", "install", "--python", python)
    return (python, "-m", "pip", "install")


# Fetches a Comfy Registry package (argv: api, node id, version, dest) with the standard
# library only, so it runs in any image step; the archive may not write outside dest.
REGISTRY_FETCH = """\
import io, json, pathlib, sys, urllib.parse, urllib.request, zipfile
api, node, version, dest = sys.argv[1:]
query = urllib.parse.urlencode({"version": version})
with urllib.request.urlopen(f"{api}/nodes/{urllib.parse.quote(node)}/install?{query}") as r:
    url = json.load(r)["downloadUrl"]
with urllib.request.urlopen(url) as r:
    archive = zipfile.ZipFile(io.BytesIO(r.read()))
root = pathlib.Path(dest).resolve()
for name in archive.namelist():
    if not (root / name).resolve().is_relative_to(root):
        sys.exit(f"{node} {version}: the archive names a path outside its folder: {name}")
archive.extractall(root)
"""
REGISTRY_API = "https://api.comfy.org"


def registry_api() -> str:
    return os.environ.get("COMFY_REGISTRY_API", REGISTRY_API).rstrip("/")


def node_commands(stack: Stack, comfyui_dir: str | os.PathLike[str], *,
                  installer: Sequence[str], python: str = "python3") -> list[Command]:
    """The commands that install every custom node at its pinned commit (or registry
    version). Pure but for reading `COMFY_REGISTRY_API` (the registry's address)."""
    commands: list[Command] = []
    for node in stack.custom_nodes:
        dest = Path(comfyui_dir, "custom_nodes", node.name)
        requirements = dest / "requirements.txt"
        if node.registry is not None:
            commands.append(Command((python, "-c", REGISTRY_FETCH, registry_api(),
                                     node.registry, str(node.version), str(dest)),
                                    unless=dest))
            commands.append(Command((*installer, "-r", str(requirements)),
                                    only_if=requirements))
            continue
        assert node.repo is not None and node.ref is not None
        git = ("git", "-C", str(dest))
        commands.append(Command(("git", "clone", "--filter=blob:none", "--no-checkout",
                                 node.repo, str(dest)), unless=dest))
        commands.append(Command((*git, "checkout", "--quiet", "--detach", node.ref)))
        if node.recursive:
            commands.append(Command((*git, "submodule", "update", "--init", "--recursive")))
        commands.append(Command((*installer, "-r", str(requirements)), only_if=requirements))
    return commands


def run_commands(commands: Iterable[Command], *,
                 echo: Callable[[str], None] | None = None) -> None:
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    for command in commands:
        if command.only_if is not None and not command.only_if.exists():
            continue
        if command.unless is not None and command.unless.exists():
            say(f"= {command.unless} exists, not cloned again")
            continue
        say(f"+ {command}")
        try:
            subprocess.run(command.argv, check=True, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise InstallError(f"failed: {command} ({exc})") from exc


def install_nodes(stack: Stack, comfyui_dir: str | os.PathLike[str], *,
                  installer: Sequence[str] | None = None,
                  echo: Callable[[str], None] | None = None) -> list[Command]:
    """Clone each custom node at its ref into `comfyui_dir/custom_nodes` and install its deps."""
    commands = node_commands(stack, comfyui_dir,
                             installer=installer if installer is not None else default_installer())
    Path(comfyui_dir, "custom_nodes").mkdir(parents=True, exist_ok=True)
    run_commands(commands, echo=echo)
    return commands
