"""The stack file, the model downloader and the node installer, without ComfyUI.

Downloads run against a real HTTP server on 127.0.0.1 that speaks Range and
can cut a response short, so resuming is exercised over a real socket.
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from comfy_remote_exec.stack.cli import main as stack_main
from comfy_remote_exec.stack.download import DownloadError, TextBar, download_models
from comfy_remote_exec.stack.spec import (
    Stack,
    StackError,
    default_installer,
    install_nodes,
    load_stack,
    node_commands,
    parse_stack,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deploy" / "stack.yaml"
COMFY_FOLDERS = {"checkpoints", "configs", "loras", "vae", "text_encoders", "clip",
                 "diffusion_models", "unet", "clip_vision", "style_models", "embeddings",
                 "diffusers", "vae_approx", "controlnet", "t2i_adapter", "gligen",
                 "upscale_models", "hypernetworks", "photomaker", "classifiers",
                 "model_patches", "audio_encoders"}
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test-token-not-a-secret-5f2c"

# -- the shipped stack file ---------------------------------------------------------


def test_shipped_stack_parses_with_pinned_nodes_and_models() -> None:
    stack = load_stack(SHIPPED)
    assert stack.comfyui.repo == "https://github.com/comfyanonymous/ComfyUI"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", stack.comfyui.ref)
    assert len(stack.custom_nodes) == 9
    assert {n.name for n in stack.custom_nodes if n.recursive} == {"ComfyUI_UltimateSDUpscale"}
    assert all(re.fullmatch(r"[0-9a-f]{40}", n.ref) for n in stack.custom_nodes)
    assert all(n.repo.startswith("https://github.com/") for n in stack.custom_nodes)
    assert len(stack.models) == 8
    assert {m.folder for m in stack.models} <= COMFY_FOLDERS
    assert all(m.url.startswith("https://huggingface.co/") and "/resolve/" in m.url
               for m in stack.models)
    assert all(m.url.endswith("/" + m.name) for m in stack.models)
    gated = {m.name for m in stack.models if m.token_env == "HUGGINGFACE_ACCESS_TOKEN"}
    assert gated == {"ae.safetensors", "flux1-dev.safetensors"}


def test_dockerfile_and_model_paths_follow_the_stack() -> None:
    stack = load_stack(SHIPPED)
    dockerfile = (ROOT / "deploy" / "runpod" / "Dockerfile").read_text()
    assert f"ARG COMFYUI_REF={stack.comfyui.ref}\n" in dockerfile
    paths = yaml.safe_load((ROOT / "deploy" / "runpod" / "extra_model_paths.yaml").read_text())
    mapped = {key for section in paths.values() for key in section}
    assert {m.folder for m in stack.models} <= mapped
    assert "custom_nodes" in mapped


def test_show_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert stack_main(["show", "--stack", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "Custom nodes (9)" in out and "Models (8)" in out and "v0.3.64" in out


# -- bad stack files -----------------------------------------------------------------


def minimal() -> dict[str, Any]:
    return {"comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.64"},
            "custom_nodes": [{"name": "node-a", "repo": "https://github.com/o/a", "ref": SHA}],
            "models": [{"name": "m.safetensors", "url": "https://example.com/m.safetensors",
                        "folder": "checkpoints"}]}


def test_minimal_stack_parses() -> None:
    stack = parse_stack(minimal())
    assert stack.custom_nodes[0].recursive is False
    assert stack.models[0].path("/vol") == Path("/vol/models/checkpoints/m.safetensors")


@pytest.mark.parametrize("path,value,fragment", [
    (("models", 0, "name"), "../../etc/passwd", "must not contain '..'"),
    (("models", 0, "name"), "/etc/passwd", "absolute path"),
    (("models", 0, "folder"), "../custom_nodes", "must not contain '..'"),
    (("custom_nodes", 0, "name"), "../evil", "must not contain '..'"),
    (("custom_nodes", 0, "name"), "a/b", "single folder name"),
    (("custom_nodes", 0, "ref"), "0123abc", "full 40-character commit sha"),
    (("custom_nodes", 0, "ref"), "main", "full 40-character commit sha"),
    (("custom_nodes", 0, "recursive"), "yes", "recursive must be true or false"),
    (("custom_nodes", 0, "repo"), "--upload-pack=evil", "https:// git URL"),
    (("models", 0, "url"), None, "models[0] (m.safetensors): missing url"),
    (("models", 0, "url"), "ftp://example.com/m", "http(s) URL"),
    (("models", 0, "sha256"), "abc", "64 hex"),
    (("models", 0, "size"), -1, "positive number of bytes"),
    (("models", 0, "token_env"), "A TOKEN", "environment variable name"),
    (("models", 0, "sizes"), 3, "unknown field sizes"),
    (("comfyui", "ref"), "--help", "not a git tag"),
    (("comfyui",), None, "missing comfyui"),
])
def test_bad_stack_files_name_the_field(path: tuple[Any, ...], value: Any,
                                        fragment: str) -> None:
    data = minimal()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(StackError) as info:
        parse_stack(data)
    assert fragment in info.value.message
    assert info.value.status == 400


def test_duplicates_and_unknown_selections_are_refused(tmp_path: Path) -> None:
    data = minimal()
    data["models"].append(copy.deepcopy(data["models"][0]))
    with pytest.raises(StackError, match="listed twice"):
        parse_stack(data)
    with pytest.raises(StackError, match="no model named nope"):
        parse_stack(minimal()).select(["nope"])
    bad = tmp_path / "stack.yaml"
    bad.write_text("comfyui: [unclosed\n")
    with pytest.raises(StackError, match="not valid YAML"):
        load_stack(bad)


# -- downloads against a real loopback server ----------------------------------------


@dataclass
class FileServer:
    url: str
    files: dict[str, bytes]
    requests: list[dict[str, str]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)  # next response stops after N bytes
    ignore_range: bool = False
    need_token: str | None = None
    redirect_to: str | None = None  # every request is redirected to this base URL


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            server.requests.append({"path": self.path, **{k.lower(): v for k, v in
                                                          self.headers.items()}})
            if server.redirect_to:
                self.send_response(302)
                self.send_header("Location", f"{server.redirect_to}/files/{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if server.need_token and (self.headers.get("Authorization")
                                      != f"Bearer {server.need_token}"):
                self.send_error(401)
                return
            if name not in server.files:
                self.send_error(404)
                return
            body = server.files[name]
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and not server.ignore_range:
                start = int(ranged[6:].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            cut = server.cut_after.pop(name, None)
            self.wfile.write(body[start:] if cut is None else body[start:start + cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler


@pytest.fixture
def serve() -> Iterator[Any]:
    running: list[ThreadingHTTPServer] = []

    def start(files: dict[str, bytes]) -> FileServer:
        state = FileServer(url="", files=files)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        running.append(httpd)
        return state

    yield start
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        yield c


BLOB = bytes(range(256)) * 4099  # a little over 1 MiB, so it spans several chunks


def stack_for(server: FileServer, name: str = "model.safetensors", *, data: bytes = BLOB,
              sha256: str | None = "auto", size: int | None = -1,
              token_env: str | None = None) -> Stack:
    model: dict[str, Any] = {"name": name, "url": f"{server.url}/files/{name}",
                             "folder": "checkpoints"}
    if size is not None:
        model["size"] = len(data) if size == -1 else size
    if sha256 is not None:
        model["sha256"] = hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256
    if token_env:
        model["token_env"] = token_env
    return parse_stack({"comfyui": minimal()["comfyui"], "models": [model]})


class Quiet:
    def update(self, name: str, done: int, total: int | None) -> None:
        pass

    def finish(self, name: str, done: int, note: str) -> None:
        pass


def test_full_download_is_verified(serve: Any, client: httpx.Client, tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    [done] = download_models(stack_for(server), tmp_path, client, Quiet())
    target = tmp_path / "models" / "checkpoints" / "model.safetensors"
    assert done.status == "downloaded" and done.path == target and done.fetched == len(BLOB)
    assert target.read_bytes() == BLOB
    assert not target.with_name("model.safetensors.part").exists()
    assert [r.get("range") for r in server.requests] == [None]


def test_interrupted_download_resumes_with_a_range_request(serve: Any, client: httpx.Client,
                                                           tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    server.cut_after["model.safetensors"] = 300_000
    stack = stack_for(server)
    with pytest.raises(DownloadError, match="run again to resume") as info:
        download_models(stack, tmp_path, client, Quiet(), attempts=1)
    assert info.value.retryable
    part = tmp_path / "models" / "checkpoints" / "model.safetensors.part"
    kept = part.stat().st_size
    assert 0 < kept <= 300_000 and part.read_bytes() == BLOB[:kept]
    assert not (tmp_path / "models" / "checkpoints" / "model.safetensors").exists()

    [done] = download_models(stack, tmp_path, client, Quiet())
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert done.status == "resumed" and done.fetched == len(BLOB) - kept
    data = done.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(BLOB).hexdigest()
    assert not part.exists()


def test_retries_within_one_call_resume_too(serve: Any, client: httpx.Client,
                                            tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    server.cut_after["model.safetensors"] = 100_000
    waits: list[float] = []
    [done] = download_models(stack_for(server), tmp_path, client, Quiet(), sleep=waits.append)
    assert done.path.read_bytes() == BLOB and len(waits) == 1
    assert server.requests[-1]["range"].startswith("bytes=")


def test_a_server_ignoring_range_restarts_the_file(serve: Any, client: httpx.Client,
                                                   tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    server.ignore_range = True
    part = tmp_path / "models" / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    [done] = download_models(stack_for(server), tmp_path, client, Quiet())
    assert server.requests[0]["range"] == "bytes=29-"
    assert done.path.read_bytes() == BLOB and not part.exists()


def test_a_complete_part_of_unknown_size_is_finished_without_data(
        serve: Any, client: httpx.Client, tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    part = tmp_path / "models" / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BLOB)
    [done] = download_models(stack_for(server, size=None), tmp_path, client, Quiet())
    assert server.requests[0]["range"] == f"bytes={len(BLOB)}-"
    assert done.fetched == 0 and done.path.read_bytes() == BLOB


@pytest.mark.parametrize("kwargs,fragment", [
    ({"sha256": "f" * 64}, "does not match"),
    ({"size": len(BLOB) + 5, "sha256": None}, f"got {len(BLOB)} bytes"),
])
def test_a_mismatch_raises_and_removes_the_part(serve: Any, client: httpx.Client,
                                                tmp_path: Path, kwargs: dict[str, Any],
                                                fragment: str) -> None:
    server = serve({"model.safetensors": BLOB})
    with pytest.raises(DownloadError, match=fragment):
        download_models(stack_for(server, **kwargs), tmp_path, client, Quiet())
    folder = tmp_path / "models" / "checkpoints"
    assert list(folder.iterdir()) == []


def test_a_complete_file_is_skipped_without_a_request(serve: Any, client: httpx.Client,
                                                      tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    target = tmp_path / "models" / "checkpoints" / "model.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(BLOB)
    [done] = download_models(stack_for(server), tmp_path, client, Quiet(),
                             verify_existing=True)
    assert done.status == "present" and done.fetched == 0
    assert server.requests == []


def test_a_truncated_file_in_place_is_fetched_again(serve: Any, client: httpx.Client,
                                                    tmp_path: Path) -> None:
    server = serve({"model.safetensors": BLOB})
    target = tmp_path / "models" / "checkpoints" / "model.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(BLOB[:10])
    [done] = download_models(stack_for(server), tmp_path, client, Quiet())
    assert done.status == "downloaded" and target.read_bytes() == BLOB


def test_the_token_is_sent_as_bearer_and_never_printed(
        serve: Any, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = serve({"model.safetensors": BLOB})
    server.need_token = TOKEN
    monkeypatch.setenv("TEST_HF_TOKEN", TOKEN)
    stack = stack_for(server, token_env="TEST_HF_TOKEN")
    [done] = download_models(stack, tmp_path, client)  # the default text bar, on stderr
    assert done.path.read_bytes() == BLOB
    assert server.requests[0]["authorization"] == f"Bearer {TOKEN}"
    captured = capsys.readouterr()
    assert "model.safetensors: downloaded" in captured.err
    assert TOKEN not in captured.err + captured.out


def test_a_refused_token_names_the_variable_not_the_value(
        serve: Any, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = serve({"model.safetensors": BLOB})
    server.need_token = "the-right-one"
    monkeypatch.setenv("TEST_HF_TOKEN", TOKEN)
    with pytest.raises(DownloadError, match="HTTP 401") as info:
        download_models(stack_for(server, token_env="TEST_HF_TOKEN"), tmp_path, client)
    assert "TEST_HF_TOKEN was refused" in info.value.message
    assert TOKEN not in info.value.message + str(capsys.readouterr())
    monkeypatch.delenv("TEST_HF_TOKEN")
    with pytest.raises(DownloadError, match="set TEST_HF_TOKEN"):
        download_models(stack_for(server, token_env="TEST_HF_TOKEN"), tmp_path, client)
    assert "authorization" not in server.requests[-1]


def test_the_token_does_not_follow_a_redirect_to_another_host(
        serve: Any, client: httpx.Client, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cdn = serve({"model.safetensors": BLOB})
    hub = serve({})
    hub.redirect_to = cdn.url
    monkeypatch.setenv("TEST_HF_TOKEN", TOKEN)
    part = tmp_path / "models" / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BLOB[:1000])
    [done] = download_models(stack_for(hub, token_env="TEST_HF_TOKEN"), tmp_path, client,
                             Quiet())
    assert done.path.read_bytes() == BLOB
    assert hub.requests[0]["authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in cdn.requests[0]
    assert cdn.requests[0]["range"] == "bytes=1000-"


def test_cli_download_only_selected_models(serve: Any, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    server = serve({"a.pth": b"a" * 10, "b.pth": b"b" * 20})
    models = [{"name": n, "url": f"{server.url}/files/{n}", "folder": "upscale_models",
               "size": s} for n, s in (("a.pth", 10), ("b.pth", 20))]
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump({"comfyui": minimal()["comfyui"], "models": models}))
    volume = tmp_path / "volume"
    assert stack_main(["download", "--stack", str(path), "--volume", str(volume),
                       "--only", "b.pth"]) == 0
    assert (volume / "models" / "upscale_models" / "b.pth").read_bytes() == b"b" * 20
    assert not (volume / "models" / "upscale_models" / "a.pth").exists()
    assert stack_main(["download", "--stack", str(path), "--volume", str(volume),
                       "--only", "c.pth"]) == 1
    assert "no model named c.pth" in capsys.readouterr().err


def test_text_bar_draws_in_place_on_a_terminal() -> None:
    class Tty:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> int:
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = TextBar(out)  # type: ignore[arg-type]
    bar.update("m", 512, 1024)
    bar.finish("m", 1024, "downloaded")
    assert "50%" in out.text and "512/1.00k" in out.text, out.text
    assert out.text.rstrip().endswith("m: downloaded (1.0 KiB)")


# -- installing custom nodes ---------------------------------------------------------


def test_node_commands_clone_at_the_pinned_ref(tmp_path: Path) -> None:
    stack = load_stack(SHIPPED)
    installer = ("uv", "pip", "install", "--python", "/py")
    commands = node_commands(stack, tmp_path, installer=installer)
    by_node: dict[str, list[tuple[str, ...]]] = {}
    for command in commands:
        dest = next(a for a in command.argv if "custom_nodes" in a)
        folder = Path(dest).relative_to(tmp_path / "custom_nodes").parts[0]
        by_node.setdefault(folder, []).append(command.argv)
    assert list(by_node) == [n.name for n in stack.custom_nodes]
    for node in stack.custom_nodes:
        dest = str(tmp_path / "custom_nodes" / node.name)
        argvs = by_node[node.name]
        assert argvs[0][:2] == ("git", "clone") and argvs[0][-2:] == (node.repo, dest)
        assert argvs[1] == ("git", "-C", dest, "checkout", "--quiet", "--detach", node.ref)
        submodules = ("git", "-C", dest, "submodule", "update", "--init", "--recursive")
        assert (submodules in argvs) == node.recursive
        assert argvs[-1] == (*installer, "-r", f"{dest}/requirements.txt")
    reqs = [c for c in commands if "-r" in c.argv]
    assert all(c.only_if == Path(c.argv[-1]) for c in reqs)
    clones = [c for c in commands if c.argv[:2] == ("git", "clone")]
    assert all(c.unless == Path(c.argv[-1]) for c in clones)


def test_default_installer_prefers_uv() -> None:
    assert default_installer("/py", which=lambda _: "/bin/uv") == (
        "/bin/uv", "pip", "install", "--python", "/py")
    assert default_installer("/py", which=lambda _: None) == ("/py", "-m", "pip", "install")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_install_nodes_checks_out_the_ref_and_installs_requirements(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git("init", "-q", cwd=upstream)
    (upstream / "requirements.txt").write_text("example-package\n")
    git("add", ".", cwd=upstream)
    git("commit", "-q", "-m", "one", cwd=upstream)
    pinned = git("rev-parse", "HEAD", cwd=upstream)
    (upstream / "later.py").write_text("")
    git("add", ".", cwd=upstream)
    git("commit", "-q", "-m", "two", cwd=upstream)

    stack = parse_stack({"comfyui": minimal()["comfyui"], "custom_nodes": [
        {"name": "node-a", "repo": upstream.as_uri(), "ref": pinned}]})
    marker = tmp_path / "installed.txt"
    installer = (sys.executable, "-c",
                 f"import sys; open({str(marker)!r}, 'a').write(sys.argv[-1] + '\\n')")
    comfy = tmp_path / "ComfyUI"
    lines: list[str] = []
    install_nodes(stack, comfy, installer=installer, echo=lines.append)
    dest = comfy / "custom_nodes" / "node-a"
    assert git("rev-parse", "HEAD", cwd=dest) == pinned
    assert not (dest / "later.py").exists()
    assert marker.read_text() == f"{dest / 'requirements.txt'}\n"
    assert any(line.startswith("+ git clone") for line in lines)

    lines.clear()
    install_nodes(stack, comfy, installer=installer, echo=lines.append)
    assert any("not cloned again" in line for line in lines)
    assert git("rev-parse", "HEAD", cwd=dest) == pinned
