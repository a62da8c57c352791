"""Setting a deployment up: `verify` (what `verify_setup` prints) on a base directory
with and without the stack's models, and `fill_models` (what `download_models` runs)
against a file server on loopback, resuming a cut download."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from comfy_remote_exec.platforms.modal.setup import fill_models, verify
from comfy_remote_exec.stack.spec import Stack, parse_stack

from ...test_stack import Quiet, serve  # noqa: F401  (serve is a fixture)

MODEL_A, MODEL_B = b"a" * 3000, b"b" * 5000


def tiny_stack(url: str, node_ref: str) -> Stack:
    return parse_stack({
        "comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.64"},
        "custom_nodes": [
            {"name": "node-pinned", "repo": "https://example.com/p.git", "ref": node_ref},
            {"name": "node-absent", "repo": "https://example.com/a.git", "ref": "c" * 40}],
        "models": [
            {"name": "a.safetensors", "url": f"{url}/files/a.safetensors", "folder": "vae",
             "size": len(MODEL_A), "sha256": hashlib.sha256(MODEL_A).hexdigest()},
            {"name": "b.pth", "url": f"{url}/files/b.pth", "folder": "upscale_models",
             "size": len(MODEL_B), "sha256": hashlib.sha256(MODEL_B).hexdigest()}]})


def git_node(folder: Path) -> str:
    folder.mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", "-C", str(folder), *a], check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    run("init", "-q")
    (folder / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "node")
    return run("rev-parse", "HEAD")


def test_verify_says_what_the_stack_expects_and_is_missing(tmp_path: Path) -> None:
    comfyui = tmp_path / "comfyui"
    head = git_node(comfyui / "custom_nodes" / "node-pinned")
    (comfyui / "custom_nodes" / "extra-node").mkdir()
    volume = tmp_path / "volume"
    stack = tiny_stack("https://models.example", head)

    empty = verify(stack, volume, comfyui)
    assert not empty.ok
    assert empty.missing_models == ["vae/a.safetensors", "upscale_models/b.pth"]
    assert empty.missing_nodes == ["node-absent"] and empty.wrong_commit == []
    text = empty.text()
    assert "model vae/a.safetensors" in text and "custom node node-absent" in text
    assert f"node-pinned  {head[:12]}" in text and "extra-node  not a git checkout" in text

    (volume / "models" / "vae").mkdir(parents=True)
    (volume / "models" / "vae" / "a.safetensors").write_bytes(MODEL_A)
    (volume / "models" / "upscale_models").mkdir()
    (volume / "models" / "upscale_models" / "b.pth").write_bytes(b"short")
    partial = verify(stack, volume, comfyui)
    assert partial.missing_models == []
    assert partial.wrong_size == [("upscale_models/b.pth", 5, len(MODEL_B))]
    assert partial.models == {"vae": [("a.safetensors", len(MODEL_A))],
                              "upscale_models": [("b.pth", 5)]}

    (volume / "models" / "upscale_models" / "b.pth").write_bytes(MODEL_B)
    pinned_only = parse_stack({**_raw(stack), "custom_nodes": [
        {"name": "node-pinned", "repo": "https://example.com/p.git", "ref": head}]})
    full = verify(pinned_only, volume, comfyui)
    assert full.ok, full.text()
    assert "nothing: the deployment has all the stack lists" in full.text()
    moved = verify(parse_stack({**_raw(stack), "custom_nodes": [
        {"name": "node-pinned", "repo": "https://example.com/p.git", "ref": "d" * 40}]}),
        volume, comfyui)
    assert moved.wrong_commit == [("node-pinned", head, "d" * 40)]


def _raw(stack: Stack) -> dict[str, Any]:
    return {"comfyui": {"repo": stack.comfyui.repo, "ref": stack.comfyui.ref},
            "models": [{"name": m.name, "url": m.url, "folder": m.folder, "size": m.size,
                        "sha256": m.sha256} for m in stack.models]}


def test_fill_downloads_in_parallel_commits_each_model_and_resumes(
        serve: Any, tmp_path: Path) -> None:  # noqa: F811
    server = serve({"a.safetensors": MODEL_A, "b.pth": MODEL_B})
    server.cut_after["b.pth"] = 1000  # the first fetch of b stops after 1000 bytes
    stack = tiny_stack(server.url, "e" * 40)
    commits: list[set[str]] = []

    def commit() -> None:  # what is in place when the volume is committed
        commits.append({p.name for p in tmp_path.rglob("*") if p.is_file()})

    done = fill_models(stack, tmp_path, commit, parallel=2, progress=Quiet())
    assert sorted(d.status for d in done) == ["downloaded", "resumed"]
    assert (tmp_path / "models" / "upscale_models" / "b.pth").read_bytes() == MODEL_B
    assert len(commits) == 3, "one commit per model landed, one at the end"
    assert {"a.safetensors", "b.pth"} <= commits[-1]
    assert any(r["path"].endswith("/b.pth") and r.get("range") == "bytes=1000-"
               for r in server.requests), "b resumed where the cut left it"
    again = fill_models(stack, tmp_path, commit, parallel=2, progress=Quiet())
    assert [d.status for d in again] == ["present", "present"]
