"""Setting a deployment up: filling the models volume, and checking what is there.

- `fill_models` runs the stack downloader (`stack.download`: resumable,
  verified by size and sha256, `parallel` files at once) into the models
  volume and commits the volume after each file that lands, so a fill cut off
  by its timeout keeps what it finished; the partial file of the one in
  flight is committed at the end, and the next run resumes it.
- `verify` lists the model files per folder and the custom nodes (with the
  commit each is at), and says what the stack expects that is missing: a
  model absent or of the wrong size, a custom node absent or at another
  commit. `modal run deploy/modal/app.py::verify_setup` prints its `text()`.

Plain functions of paths and a `commit` callable; nothing here imports `modal`.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ...fsutil import human_size
from ...stack.download import Downloaded, Progress, download_models
from ...stack.spec import Stack

log = logging.getLogger(__name__)


def fill_models(stack: Stack, volume_dir: Path, commit: Callable[[], None], *,
                parallel: int = 4, only: Iterable[str] | None = None,
                progress: Progress | None = None) -> list[Downloaded]:
    lock = threading.Lock()

    def landed(done: Downloaded) -> None:
        if done.status == "present":
            return
        with lock:
            try:
                commit()
            except RuntimeError as exc:  # Modal: files still open (the others' parts)
                log.info("commit after %s deferred: %s", done.model.name, exc)

    try:
        return download_models(stack, volume_dir, progress=progress, only=only,
                               parallel=parallel, on_done=landed)
    finally:
        commit()


@dataclass
class NodeState:
    name: str
    commit: str | None  # None: not a git checkout
    expected: str | None  # the stack's ref; None: not in the stack


@dataclass
class SetupReport:
    models: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    nodes: list[NodeState] = field(default_factory=list)
    missing_models: list[str] = field(default_factory=list)
    wrong_size: list[tuple[str, int, int]] = field(default_factory=list)
    missing_nodes: list[str] = field(default_factory=list)
    wrong_commit: list[tuple[str, str | None, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_models or self.wrong_size or self.missing_nodes
                    or self.wrong_commit)

    def text(self) -> str:
        lines = ["Models (models volume):"]
        if not self.models:
            lines.append("  (none)")
        for folder, files in sorted(self.models.items()):
            lines.append(f"  {folder}/")
            lines += [f"    {name}  {human_size(size)}" for name, size in files]
        lines += ["", "Custom nodes (image):"]
        if not self.nodes:
            lines.append("  (none)")
        for node in self.nodes:
            at = node.commit[:12] if node.commit else "not a git checkout"
            lines.append(f"  {node.name}  {at}" + ("" if node.expected else "  (not in the stack)"))
        lines += ["", "Missing from what the stack expects:"]
        lines += [f"  model {rel}" for rel in self.missing_models]
        lines += [f"  model {rel}: {human_size(have)}, the stack says {human_size(want)}"
                  for rel, have, want in self.wrong_size]
        lines += [f"  custom node {name}" for name in self.missing_nodes]
        lines += [f"  custom node {name} at {(have or 'no commit')[:12]}, the stack pins "
                  f"{want[:12]}" for name, have, want in self.wrong_commit]
        if self.ok:
            lines.append("  nothing: the deployment has all the stack lists")
        return "\n".join(lines)


def git_head(folder: Path) -> str | None:
    if not (folder / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def verify(stack: Stack, volume_dir: Path, comfyui_dir: Path) -> SetupReport:
    """What the models volume (`volume_dir/models/...`) and ComfyUI's custom_nodes hold,
    against the stack."""
    report = SetupReport()
    models_root = volume_dir / "models"
    if models_root.is_dir():
        for path in sorted(models_root.rglob("*")):
            if path.is_file() and not path.name.endswith(".part"):
                rel = path.relative_to(models_root)
                folder = rel.parts[0] if len(rel.parts) > 1 else "."
                name = "/".join(rel.parts[1:]) or rel.name
                report.models.setdefault(folder, []).append((name, path.stat().st_size))
    for model in stack.models:
        path = model.path(volume_dir)
        if not path.is_file():
            report.missing_models.append(model.relpath)
        elif model.size is not None and path.stat().st_size != model.size:
            report.wrong_size.append((model.relpath, path.stat().st_size, model.size))
    # A registry node (no git commit) is checked for presence only.
    pinned = {node.name: node.ref for node in stack.custom_nodes}
    nodes_dir = comfyui_dir / "custom_nodes"
    present = sorted(p for p in nodes_dir.iterdir() if p.is_dir()
                     and not p.name.startswith((".", "__"))) if nodes_dir.is_dir() else []
    for node_dir in present:
        report.nodes.append(NodeState(node_dir.name, git_head(node_dir),
                                      pinned.get(node_dir.name)))
    have = {n.name: n for n in report.nodes}
    for name, ref in pinned.items():
        node = have.get(name)
        if node is None:
            report.missing_nodes.append(name)
        elif ref is not None and node.commit != ref:
            report.wrong_commit.append((name, node.commit, ref))
    return report
