"""Acceptance: `stack freeze` on a real ComfyUI install round-trips through `stack show`
and the stack file's parser."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.stack.cli import main as stack_main
from comfy_remote_exec.stack.freeze import (
    freeze,
    https_remote,
    model_names,
    node_types_by_package,
    read_toml,
    render,
)
from comfy_remote_exec.stack.spec import (
    CustomNode,
    InstallError,
    Model,
    Stack,
    StackError,
    install_nodes,
    load_stack,
    node_commands,
    parse_stack,
)

from ..helpers import workflow
from .stackfixtures import (
    GIT_NODE,
    LORA,
    NODE_REPO,
    REGISTRY_ID,
    REGISTRY_NODE,
    REGISTRY_VERSION,
    git,
    make_local,
    ui_workflow,
)


def test_freeze_round_trips_through_show(comfy_install: ComfyInstall, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "local"
    node = make_local(base)
    out = tmp_path / "frozen.yaml"
    assert stack_main(["freeze", "--comfyui", str(comfy_install.root), "--base-directory",
                       str(base), "--out", str(out), "--base", str(tmp_path / "none.yaml")]
                      ) == 1, "a --base that does not exist is an error"
    assert stack_main(["freeze", "--comfyui", str(comfy_install.root), "--base-directory",
                       str(base), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "loose_node.py: a single file, not pinnable" in err
    assert "not_here.ckpt: used by a workflow but in none" in err
    assert ("2 models need a download URL: loras/styles/extra_lora.safetensors, "
            "upscale_models/tiny_compact_x2.safetensors") in err
    stack = load_stack(out)
    # ComfyUI: its version's tag (the test installs are not git checkouts) or its commit.
    version = re.search(r'__version__ = "([^"]+)"',
                        (comfy_install.root / "comfyui_version.py").read_text())
    assert version is not None
    assert stack.comfyui.ref in (f"v{version.group(1)}", git(comfy_install.root, "rev-parse",
                                                              "HEAD") if len(
        stack.comfyui.ref) == 40 else "")
    nodes = {n.name: n for n in stack.custom_nodes}
    assert set(nodes) == {GIT_NODE, REGISTRY_NODE}
    assert (nodes[GIT_NODE].repo, nodes[GIT_NODE].ref) == (NODE_REPO, git(node, "rev-parse",
                                                                          "HEAD"))
    assert (nodes[REGISTRY_NODE].registry, nodes[REGISTRY_NODE].version) == (
        REGISTRY_ID, REGISTRY_VERSION)
    models = {m.relpath: m for m in stack.models}
    assert set(models) == {"upscale_models/tiny_compact_x2.safetensors", f"loras/{LORA}"}
    lora = base / "models" / "loras" / LORA
    assert models[f"loras/{LORA}"] == Model(
        name=LORA, url=None, folder="loras", size=lora.stat().st_size,
        sha256=hashlib.sha256(lora.read_bytes()).hexdigest())
    # Round trip: show prints it, and it parses back to the same stack.
    assert stack_main(["show", "--stack", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"registry {REGISTRY_ID}@{REGISTRY_VERSION}" in shown
    assert f"loras/{LORA}" in shown and "NO URL" in shown
    assert parse_stack(yaml.safe_load(out.read_text())) == stack
    # Downloads and the image build say which models lack a URL.
    assert stack_main(["download", "--stack", str(out), "--volume", str(tmp_path / "v")]) == 1
    assert f"no download URL for loras/{LORA}, upscale_models" in capsys.readouterr().err


def test_freeze_reuses_urls_of_a_base_stack_and_one_workflow(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    base = tmp_path / "local"
    make_local(base)
    known = Stack(comfyui=parse_stack({"comfyui": {"repo": "https://x.invalid/c",
                                                   "ref": "v1"}}).comfyui,
                  custom_nodes=(), models=(Model(LORA, "https://x.invalid/lora", "loras",
                                                 token_env="HF_TOKEN"),))
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(ui_workflow(LORA)))
    frozen = freeze(comfy_install.root, base_dir=base, workflows=[flow], base=known)
    [model] = frozen.stack.models
    assert (model.url, model.token_env) == ("https://x.invalid/lora", "HF_TOKEN")
    assert parse_stack(yaml.safe_load(render(frozen))) == frozen.stack


def test_node_types_are_recorded_from_object_info() -> None:
    info = {"A": {"python_module": "custom_nodes.My-Pack"},
            "B": {"python_module": "custom_nodes.my-pack.sub"},
            "KSampler": {"python_module": "nodes"}}
    assert node_types_by_package(info) == {"my-pack": ["A", "B"]}


def test_model_names_from_api_and_ui_workflows() -> None:
    assert model_names([workflow("upscale_tiny"), ui_workflow("a\\b.safetensors"),
                        {"1": {"inputs": {"x": "../../etc/passwd.pt"}}}]) == [
        "a/b.safetensors", "not_here.ckpt", "tiny_compact_x2.safetensors"]


def test_remotes_and_pyproject_fallback() -> None:
    assert https_remote("git@github.com:o/r.git") == "https://github.com/o/r"
    assert https_remote("https://github.com/o/r") == "https://github.com/o/r"
    text = '[project]\nname = "x"\nversion = "1.0"\n[tool.comfy]\nPublisherId = "p"\n'
    data = read_toml(text)
    assert data["project"] == {"name": "x", "version": "1.0"} and "comfy" in data["tool"]


def test_registry_nodes_parse_install_and_refuse_bad_values(tmp_path: Path) -> None:
    stack = parse_stack({"comfyui": {"repo": "https://x.invalid/c", "ref": "v1"},
                         "custom_nodes": [{"name": "pack", "registry": "pack-id",
                                           "version": "2.0.1", "node_types": ["T"]}]})
    assert stack.custom_nodes == (CustomNode("pack", registry="pack-id", version="2.0.1",
                                             node_types=("T",)),)
    fetch, deps = node_commands(stack, tmp_path, installer=("pip", "install"))
    assert fetch.argv[3:] == ("https://api.comfy.org", "pack-id", "2.0.1",
                              str(tmp_path / "custom_nodes" / "pack"))
    assert fetch.unless == tmp_path / "custom_nodes" / "pack"
    assert deps.only_if == tmp_path / "custom_nodes" / "pack" / "requirements.txt"
    for bad, says in [({"registry": "../x", "version": "1"}, "Comfy Registry node id"),
                      ({"registry": "ok", "version": "latest"}, "must be a release"),
                      ({"registry": "ok", "version": "1", "repo": "https://x"},
                       "unknown field repo")]:
        with pytest.raises(StackError, match=says):
            parse_stack({"comfyui": {"repo": "https://x.invalid/c", "ref": "v1"},
                         "custom_nodes": [{"name": "n", **bad}]})
    with pytest.raises(StackError, match="missing url"):
        parse_stack({"comfyui": {"repo": "https://x.invalid/c", "ref": "v1"},
                     "models": [{"name": "m.pt", "folder": "loras"}]})
    with pytest.raises(StackError, match="cannot also say needs_url"):
        parse_stack({"comfyui": {"repo": "https://x.invalid/c", "ref": "v1"},
                     "models": [{"name": "m.pt", "folder": "loras", "url": "https://x/m",
                                 "needs_url": True}]})


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def registry() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback Comfy Registry: `/nodes/{id}/install?version=` and the archives."""
    archives: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if url.path.startswith("/nodes/") and url.path.endswith("/install"):
                node = url.path.split("/")[2]
                version = urllib.parse.parse_qs(url.query)["version"][0]
                body = json.dumps({"downloadUrl": f"{base}/zip/{node}-{version}"}).encode()
            elif url.path.removeprefix("/zip/") in archives:
                body = archives[url.path.removeprefix("/zip/")]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", archives
    finally:
        server.shutdown()
        thread.join()


def test_install_nodes_fetches_registry_nodes(registry: tuple[str, dict[str, bytes]],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    api, archives = registry
    monkeypatch.setenv("COMFY_REGISTRY_API", api)
    archives["pack-id-2.0.1"] = zipped({"__init__.py": b"X = 1\n", "sub/a.txt": b"a"})
    archives["evil-1.0"] = zipped({"../escaped.txt": b"no"})
    comfy = tmp_path / "comfy"

    def stack_of(registry_id: str, version: str) -> Stack:
        return parse_stack({"comfyui": {"repo": "https://x.invalid/c", "ref": "v1"},
                            "custom_nodes": [{"name": "pack", "registry": registry_id,
                                              "version": version}]})

    lines: list[str] = []
    install_nodes(stack_of("pack-id", "2.0.1"), comfy, installer=("true",), echo=lines.append)
    assert (comfy / "custom_nodes" / "pack" / "sub" / "a.txt").read_bytes() == b"a"
    assert any("pack-id" in line for line in lines)
    (comfy / "custom_nodes" / "pack").rename(comfy / "custom_nodes" / "done")
    with pytest.raises(InstallError):
        install_nodes(stack_of("evil", "1.0"), comfy, installer=("true",), echo=lines.append)
    assert not (comfy / "custom_nodes" / "escaped.txt").exists()


ROOT = Path(__file__).resolve().parents[2]


def test_the_runpod_image_builds_from_another_stack_file(tmp_path: Path) -> None:
    """build.sh's STACK reaches the Dockerfile (its ComfyUI too); the Dockerfile installs
    the nodes of the stack it was given. Docker itself is a stand-in printing its args."""
    frozen = ROOT / "test-artifacts" / "stack-build.yaml"
    frozen.parent.mkdir(exist_ok=True)
    frozen.write_text(yaml.safe_dump({"comfyui": {"repo": "https://x.invalid/ComfyUI",
                                                  "ref": "a" * 40}}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "STACK": "test-artifacts/stack-build.yaml", "TAG": "t"}
    out = subprocess.run(["bash", str(ROOT / "deploy" / "runpod" / "build.sh")], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    args = [out[i + 1] for i, a in enumerate(out) if a == "--build-arg"]
    assert "STACK=test-artifacts/stack-build.yaml" in args
    assert "COMFYUI_REPO=https://x.invalid/ComfyUI" in args and f"COMFYUI_REF={'a' * 40}" in args
    dockerfile = (ROOT / "deploy" / "runpod" / "Dockerfile").read_text()
    assert "ARG STACK=deploy/stack.yaml" in dockerfile
    assert "COPY ${STACK} /app/stack.yaml" in dockerfile
    assert "--stack /app/stack.yaml --comfyui /comfyui" in dockerfile
    assert 'checkout --quiet --detach "${COMFYUI_REF}"' in dockerfile, "a commit works too"
    # Modal's image reads REMOTE_EXEC_STACK (relative to the repository).
    assert 'os.environ.get("REMOTE_EXEC_STACK", "deploy/stack.yaml")' in (
        ROOT / "deploy" / "modal" / "app.py").read_text()


def test_the_package_dispatches_to_the_stack_tool() -> None:
    shown = subprocess.run([sys.executable, "-m", "comfy_remote_exec", "stack", "show",
                            "--stack", str(ROOT / "deploy" / "stack.yaml")],
                           capture_output=True, text=True, check=True, cwd=ROOT)
    assert shown.stdout.startswith("ComfyUI  https://github.com/comfyanonymous/ComfyUI")
    bare = subprocess.run([sys.executable, "-m", "comfy_remote_exec"], capture_output=True,
                          text=True, check=False, cwd=ROOT)
    assert bare.returncode == 2
    assert "usage: python -m comfy_remote_exec {models,stack}" in bare.stderr
