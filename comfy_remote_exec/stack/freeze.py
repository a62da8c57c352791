"""`stack freeze`: write a stack file from a local ComfyUI install.

So that the remote image mirrors the machine a user built their workflows
on, this reads, without starting ComfyUI:

- ComfyUI itself: its git remote and commit when it is a checkout, else the
  tag of its `comfyui_version.py` version;
- each custom node folder: a git checkout gives its repository and commit
  (its own checkout, not one it happens to sit inside); a folder installed
  from the Comfy Registry without git (a `.tracking` file, or a
  `pyproject.toml` with `[tool.comfy]`) gives its registry id and version;
  anything else cannot be pinned and is reported, not written;
- the models the chosen workflows use (UI or API format; by default every
  saved workflow under `user/default/workflows`), found by name in the
  install's `models/<folder>` folders and those its `extra_model_paths.yaml`
  adds (`extra_paths.py`; custom node folders it adds are read too), with
  size and sha256. Their URLs come
  from a reference stack file (`--base`, matched by folder/name or sha256);
  a model with none gets `needs_url: true`, which `stack show` and the image
  build report.

`node_types` per custom node are recorded when the caller passes the local
ComfyUI's `/object_info` (`--object-info`), whose `python_module` says which
package each node type came from.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .extra_paths import SearchPath, configs_of, search_paths
from .spec import ComfyUISource, CustomNode, Model, Stack, StackError, parse_stack

DEFAULT_COMFYUI_REPO = "https://github.com/comfyanonymous/ComfyUI"
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft",
                    ".onnx", ".pt2")
SKIPPED_NODE_DIRS = {"__pycache__"}
SHIPPED_WITH_COMFYUI = {"websocket_image_save.py", "example_node.py.example"}
_SSH_REMOTE = re.compile(r"^(?:ssh://)?git@([^:/]+)[:/](.+?)(?:\.git)?/?$")


@dataclass
class Frozen:
    """The stack, and what could not go into it (each a sentence for the user)."""

    stack: Stack
    notes: list[str] = field(default_factory=list)


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_pin(folder: Path) -> tuple[str, str, bool] | None:
    """(https repository, commit, dirty) of a folder that is itself a git checkout."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != folder.resolve():
        return None
    commit = _git(folder, "rev-parse", "HEAD")
    remote = _git(folder, "config", "--get", "remote.origin.url")
    if not commit or not remote:
        return None
    dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no"))
    return https_remote(remote), commit.lower(), dirty


def https_remote(remote: str) -> str:
    """An ssh remote (`git@github.com:o/r.git`) as the https URL a build can clone."""
    found = _SSH_REMOTE.match(remote)
    if found:
        return f"https://{found.group(1)}/{found.group(2)}"
    if remote.startswith("/"):
        return f"file://{remote}"
    return remote


def comfyui_source(root: Path) -> tuple[ComfyUISource, str | None]:
    """ComfyUI's repository and ref, and a note when it is not a clean checkout."""
    pin = git_pin(root)
    if pin is not None:
        repo, commit, dirty = pin
        return ComfyUISource(repo, commit), (
            "ComfyUI has local changes a rebuilt image will not have" if dirty else None)
    text = (root / "comfyui_version.py").read_text(encoding="utf-8") \
        if (root / "comfyui_version.py").is_file() else ""
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    if found is None:
        raise StackError(f"{root} is neither a git checkout of ComfyUI nor has a "
                         "comfyui_version.py; cannot tell its version")
    return ComfyUISource(DEFAULT_COMFYUI_REPO, f"v{found.group(1)}"), None


def registry_pin(folder: Path) -> tuple[str, str] | None:
    """(registry id, version) of a node installed from the Comfy Registry."""
    meta = folder / "pyproject.toml"
    try:
        data = read_toml(meta.read_text(encoding="utf-8")) if meta.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if data is None:
        return None
    project = data.get("project") or {}
    comfy = (data.get("tool") or {}).get("comfy")
    if not (isinstance(comfy, dict) or (folder / ".tracking").is_file()):
        return None
    name, version = project.get("name"), project.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    return name.strip().lower(), version.strip()


def read_toml(text: str) -> dict[str, Any]:
    """A pyproject's tables: `tomllib` (Python 3.11+), else the `[project]` name and
    version and whether `[tool.comfy]` is there, which is all freezing reads."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tables: dict[str, dict[str, Any]] = {}
        current: dict[str, Any] = {}
        for line in text.splitlines():
            header = re.match(r"^\s*\[([^\[\]]+)\]\s*$", line)
            if header:
                current = tables.setdefault(header.group(1).strip(), {})
                continue
            pair = re.match(r"""^\s*([A-Za-z0-9_-]+)\s*=\s*["']([^"']*)["']""", line)
            if pair:
                current[pair.group(1)] = pair.group(2)
        tool = {"comfy": tables["tool.comfy"]} if "tool.comfy" in tables else {}
        return {"project": tables.get("project", {}), "tool": tool}
    return tomllib.loads(text)


def node_types_by_package(object_info: Mapping[str, Any]) -> dict[str, list[str]]:
    """Node types per custom node folder, from `/object_info`'s `python_module`."""
    found: dict[str, list[str]] = {}
    for node_type, info in object_info.items():
        module = info.get("python_module") if isinstance(info, dict) else None
        if isinstance(module, str) and module.startswith("custom_nodes."):
            package = module.split(".", 1)[1].split(".", 1)[0]
            found.setdefault(package.lower(), []).append(str(node_type))
    return {k: sorted(v) for k, v in found.items()}


def freeze_nodes(custom_nodes: Path, types: Mapping[str, list[str]]
                 ) -> tuple[list[CustomNode], list[str]]:
    nodes, notes = [], []
    folders = sorted(custom_nodes.iterdir()) if custom_nodes.is_dir() else []
    for folder in folders:
        if folder.name in SKIPPED_NODE_DIRS or folder.name.startswith("."):
            continue
        if not folder.is_dir():
            if folder.suffix == ".py" and folder.name not in SHIPPED_WITH_COMFYUI:
                notes.append(f"custom node {folder.name}: a single file, not pinnable; "
                             "put it in a repository to have it in the image")
            continue
        if folder.name.endswith(".disabled"):
            continue
        own = tuple(types.get(folder.name.lower(), ()))
        pin = git_pin(folder)
        if pin is not None:
            repo, commit, dirty = pin
            if dirty:
                notes.append(f"custom node {folder.name}: local changes the image will "
                             "not have")
            nodes.append(CustomNode(folder.name, repo, commit,
                                    recursive=(folder / ".gitmodules").is_file(),
                                    node_types=own))
            continue
        registry = registry_pin(folder)
        if registry is not None:
            nodes.append(CustomNode(folder.name, registry=registry[0], version=registry[1],
                                    node_types=own))
            continue
        notes.append(f"custom node {folder.name}: neither a git checkout nor a Comfy "
                     "Registry install; not pinned")
    return nodes, notes


# -- models ----------------------------------------------------------------------------


def workflow_values(flow: Any) -> Iterator[str]:
    """Every string a workflow's nodes hold: API format's inputs, UI format's widget
    values (subgraphs' nodes included)."""
    if not isinstance(flow, dict):
        return
    if isinstance(flow.get("nodes"), list):
        graphs = [flow, *((flow.get("definitions") or {}).get("subgraphs") or [])]
        for graph in graphs:
            for node in graph.get("nodes") or [] if isinstance(graph, dict) else []:
                values = node.get("widgets_values") if isinstance(node, dict) else None
                items = values.values() if isinstance(values, dict) else values or []
                yield from (v for v in items if isinstance(v, str))
        return
    for node in flow.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict):
            yield from (v for v in inputs.values() if isinstance(v, str))


def model_names(flows: Iterable[Any]) -> list[str]:
    names: set[str] = set()
    for flow in flows:
        for value in workflow_values(flow):
            name = value.replace("\\", "/").strip()
            if name.lower().endswith(MODEL_EXTENSIONS) and ".." not in name.split("/"):
                names.add(name)
    return sorted(names)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def freeze_models(search: list[SearchPath], names: list[str], base: Stack | None,
                  where: str = "the model folders") -> tuple[list[Model], list[str]]:
    """Each model where ComfyUI would find it first; a name that would leave its folder
    (absolute, or with `..`) is found nowhere."""
    known = {m.relpath: m for m in base.models} if base else {}
    by_sha = {m.sha256: m for m in base.models if m.sha256} if base else {}
    models, notes = [], []
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        inside = bool(parts) and parts[0] != "/" and ".." not in parts
        hit = next((p for p in search if inside and (p.path / name).is_file()), None)
        if hit is None:
            notes.append(f"model {name}: used by a workflow but in none of {where}")
            continue
        path = hit.path / name
        sha = sha256_of(path)
        source = known.get(f"{hit.folder}/{name}") or by_sha.get(sha)
        url = source.url if source else None
        models.append(Model(name=name, url=url, folder=hit.folder,
                            size=path.stat().st_size, sha256=sha,
                            token_env=source.token_env if source else None))
    return models, notes


def load_workflows(paths: Iterable[Path]) -> list[Any]:
    flows = []
    for path in paths:
        try:
            flows.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot read the workflow {path}: {exc}") from exc
    return flows


def freeze(comfyui: Path, *, base_dir: Path | None = None,
           workflows: Iterable[Path] | None = None, object_info: Mapping[str, Any] | None = None,
           base: Stack | None = None, extra_model_paths: list[Path] | None = None) -> Frozen:
    """The stack of the install at `comfyui` (its data under `base_dir`, by default the
    install itself); models of `workflows`, by default every saved workflow; folders
    added by `extra_model_paths` files, by default the install's own file if any."""
    data = base_dir or comfyui
    source, note = comfyui_source(comfyui)
    notes = [note] if note else []
    configs = configs_of(comfyui, extra_model_paths)
    search = search_paths(data, configs)
    types = node_types_by_package(object_info or {})
    nodes: list[CustomNode] = []
    for place in (p for p in search if p.folder == "custom_nodes"):
        more, node_notes = freeze_nodes(place.path, types)
        seen = {n.name for n in nodes}  # the stack names each node folder once
        nodes += [n for n in more if n.name not in seen]
        notes += node_notes
    if workflows is None:
        workflows = sorted((data / "user" / "default" / "workflows").glob("*.json"))
    where = f"{data / 'models'}'s folders" + (
        f" or those of {', '.join(str(c) for c in configs)}" if configs else "")
    models, model_notes = freeze_models([p for p in search if p.folder != "custom_nodes"],
                                        model_names(load_workflows(workflows)), base, where)
    stack = Stack(comfyui=source, custom_nodes=tuple(nodes), models=tuple(models))
    return Frozen(stack, notes + model_notes)


# -- writing ---------------------------------------------------------------------------


def stack_data(stack: Stack) -> dict[str, Any]:
    """The stack as the mapping its file holds (`parse_stack` reads it back)."""
    nodes: list[dict[str, Any]] = []
    for node in stack.custom_nodes:
        entry: dict[str, Any] = {"name": node.name}
        if node.registry is not None:
            entry.update(registry=node.registry, version=node.version)
        else:
            entry.update(repo=node.repo, ref=node.ref)
            if node.recursive:
                entry["recursive"] = True
        if node.node_types:
            entry["node_types"] = list(node.node_types)
        nodes.append(entry)
    models: list[dict[str, Any]] = []
    for model in stack.models:
        item: dict[str, Any] = {"name": model.name, "folder": model.folder}
        if model.url is None:
            item["needs_url"] = True
        else:
            item["url"] = model.url
        item.update({k: v for k, v in (("size", model.size), ("sha256", model.sha256),
                                       ("token_env", model.token_env)) if v is not None})
        models.append(item)
    return {"comfyui": {"repo": stack.comfyui.repo, "ref": stack.comfyui.ref},
            "custom_nodes": nodes, "models": models}


def render(frozen: Frozen) -> str:
    """The stack file's text: a header, the notes as comments, the YAML."""
    lines = ["# Frozen by `python -m comfy_remote_exec.stack freeze` from a local ComfyUI.",
             "# Models marked `needs_url: true` have no known download URL: add a `url`",
             "# (and drop needs_url), or ship them from the local machine."]
    lines += [f"# note: {n}" for n in frozen.notes]
    text = yaml.safe_dump(stack_data(frozen.stack), sort_keys=False, allow_unicode=True,
                          width=100)
    parse_stack(yaml.safe_load(text), where="the frozen stack")  # never write what won't load
    return "\n".join(lines) + "\n\n" + text
