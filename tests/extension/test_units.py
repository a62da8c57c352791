"""Extension pieces that need no ComfyUI: config, secrets, landing, inputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from comfy_remote_exec.config import (
    ConfigError,
    config_path,
    load_secrets,
    resolve,
    state_dir,
    token_for,
)
from comfy_remote_exec.errors import RemoteExecError
from comfy_remote_exec.extension.core import remote_override
from comfy_remote_exec.extension.inputs import InputHasher, referenced_files
from comfy_remote_exec.extension.jobrun import comfy_message
from comfy_remote_exec.extension.landing import Lander, candidate_names, numbered
from comfy_remote_exec.protocol import (
    Executed,
    ExecutionStart,
    NodeProgress,
    OutputFile,
    ProgressState,
)

from ..helpers import write_secrets

# -- config and secrets -----------------------------------------------------------------


def test_settings_override_env_defaults() -> None:
    env = {"REMOTE_EXEC_ENABLED": "1", "REMOTE_EXEC_BACKEND": "http",
           "REMOTE_EXEC_URL": "http://env", "REMOTE_EXEC_TOKEN": "s3cret"}
    cfg = resolve({}, env)
    assert (cfg.enabled, cfg.backend, cfg.url, cfg.parallel) == (True, "http", "http://env", 1)
    cfg = resolve({"RemoteExec.Enabled": False, "RemoteExec.EndpointURL": "http://set",
                   "RemoteExec.ParallelJobs": 3}, env)
    assert (cfg.enabled, cfg.url, cfg.parallel) == (False, "http://set", 3)
    assert "s3cret" not in repr(cfg.public_view())
    assert cfg.public_view()["token_configured"] is True
    with pytest.raises(ConfigError):
        resolve({"RemoteExec.Backend": "ftp"}, {})


def test_local_backend_ignores_the_url_setting() -> None:
    cfg = resolve({"RemoteExec.EndpointURL": "http://elsewhere"},
                  {"REMOTE_EXEC_URL": "http://127.0.0.1:5"})
    assert cfg.backend == "local" and cfg.url == "http://127.0.0.1:5"


def test_secrets_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "config.yaml"
    write_secrets(path, {"http": {"token": "abc"}})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert resolve({"RemoteExec.Backend": "http"}, {}, load_secrets(path)).token == "abc"
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secrets(path)


def test_each_backend_has_its_own_credential(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_secrets(path, {"http": {"token": "h"}, "runpod": {"api_key": "r"}})
    secrets = load_secrets(path)
    assert (token_for("http", {}, secrets), token_for("runpod", {}, secrets)) == ("h", "r")
    assert token_for("runpod", {"RUNPOD_API_KEY": "env"}, secrets) == "env"
    assert token_for("modal", {}, secrets) is None
    write_secrets(path, {"http": {"token": "fixed"}})  # re-read at once, no restart
    assert token_for("http", {}, load_secrets(path)) == "fixed"


def test_paths_follow_env(tmp_path: Path) -> None:
    env = {"REMOTE_EXEC_STATE_DIR": str(tmp_path / "s"), "REMOTE_EXEC_CONFIG": "~/x.yaml"}
    assert state_dir(env) == tmp_path / "s"
    assert config_path(env) == Path("~/x.yaml").expanduser()


def test_per_request_override() -> None:
    assert remote_override({"extra_data": {"remote_exec": False}}) == {"enabled": False}
    assert remote_override({"extra_data": {"remote_exec": {"backend": "http"}}}) == {
        "backend": "http"}
    assert remote_override({}) == {}


# -- landing ----------------------------------------------------------------------------


def test_candidate_names_follow_comfyui_counter(tmp_path: Path) -> None:
    for name in ("img_00001_.png", "img_00007_.png", "other_00009_.png"):
        (tmp_path / name).write_bytes(b"x")
    names = candidate_names("img_00001_.png", numbered(tmp_path, "img_00001_.png"))
    assert names[:3] == ["img_00001_.png", "img_00008_.png", "img_00009_.png"]
    assert candidate_names("notes.txt", numbered(tmp_path, "notes.txt"))[:2] == [
        "notes.txt", "notes_00001_.txt"]


class BytesBackend:
    """A backend whose downloads come from memory (only `download` is used here)."""

    name = "bytes"

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        dest.write(self.payload)


def out(filename: str, data: bytes, subfolder: str = "", type_: str = "output") -> OutputFile:
    return OutputFile(node_id="9", key="images", filename=filename, subfolder=subfolder,
                      folder=type_, type="image", size_bytes=len(data),
                      sha256=hashlib.sha256(data).hexdigest())


async def test_landing_never_overwrites_and_lands_once(tmp_path: Path) -> None:
    lander = Lander(tmp_path / "output", tmp_path / "temp")
    (tmp_path / "output" / "sub").mkdir(parents=True)
    (tmp_path / "output" / "sub" / "a_00001_.png").write_bytes(b"users own file")
    entry = await lander.land(BytesBackend(b"remote"), "j", out("a_00001_.png", b"remote",
                                                                 "sub"))  # type: ignore[arg-type]
    assert entry == {"filename": "a_00002_.png", "subfolder": "sub", "type": "output"}
    assert (tmp_path / "output" / "sub" / "a_00001_.png").read_bytes() == b"users own file"
    again = await lander.land(BytesBackend(b"remote"), "j", out("a_00001_.png", b"remote",
                                                                 "sub"))  # type: ignore[arg-type]
    assert again == entry, "the same bytes are not landed twice"
    preview = await lander.land(BytesBackend(b"p"), "j",  # type: ignore[arg-type]
                                out("p.png", b"p", type_="temp"))
    assert preview["type"] == "temp" and (tmp_path / "temp" / "p.png").exists()
    assert not list(tmp_path.rglob("*.part"))


async def test_landing_refuses_corruption_and_escapes(tmp_path: Path) -> None:
    lander = Lander(tmp_path / "output", tmp_path / "temp")
    bad = out("x.png", b"expected")
    with pytest.raises(RemoteExecError, match="corrupted"):
        await lander.land(BytesBackend(b"tampered"), "j", bad)  # type: ignore[arg-type]
    assert not list((tmp_path / "output").iterdir())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "output" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RemoteExecError, match="escapes"):
        await lander.land(BytesBackend(b"x"), "j",  # type: ignore[arg-type]
                          out("x.png", b"x", subfolder="link"))


# -- inputs -------------------------------------------------------------------------------


def test_referenced_inputs_are_found_and_confined(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"a")
    (tmp_path / "in" / "sub" / "b.wav").write_bytes(b"b")
    (tmp_path / "out" / "a.png").write_bytes(b"earlier result")
    (tmp_path / "secret.txt").write_bytes(b"s")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png [input]"}},
              "2": {"class_type": "LoadAudio", "inputs": {"audio": "sub\\b.wav"}},
              "3": {"class_type": "X", "inputs": {"text": "../secret.txt", "n": 3,
                                                  "o": "a.png [output]", "l": ["1", 0],
                                                  "t": "../../x [temp]"}}}
    assert referenced_files(prompt) == {"a.png": ("input", "a.png"),
                                        "sub/b.wav": ("input", "sub/b.wav"),
                                        "[output]/a.png": ("output", "a.png")}
    hasher = InputHasher()
    roots = {"input": tmp_path / "in", "output": tmp_path / "out"}
    assert hasher.collect(prompt, roots, cached_only=True) is None, "a.png is not hashed yet"
    found = hasher.collect(prompt, roots)
    assert found is not None and found == hasher.collect(prompt, roots, cached_only=True)
    assert hasher.cache.hashed == 3, "cached_only read nothing"
    assert [(f.name, f.size) for f in found] == [
        ("[output]/a.png", 14), ("a.png", 1), ("sub/b.wav", 1)]
    assert found[1].sha256 == hashlib.sha256(b"a").hexdigest()
    assert found[0].path == tmp_path / "out" / "a.png"
    # Without an output folder to look in, `[output]` values ship nothing.
    assert [f.name for f in InputHasher().collect(prompt, {"input": tmp_path / "in"})] == [
        "a.png", "sub/b.wav"]


def test_hashes_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    hasher = InputHasher()
    first = hasher.sha256(path)
    assert hasher.sha256(path) == first
    path.write_bytes(b"two!")
    assert hasher.sha256(path) != first


# -- messages back into ComfyUI's shape ---------------------------------------------


def test_comfy_message_puts_back_the_local_prompt_id() -> None:
    state = ProgressState({"2": NodeProgress(state="running", node_id="2")})
    data = comfy_message(state, "local-1", 10.0)
    assert data["prompt_id"] == "local-1"
    assert data["nodes"]["2"]["prompt_id"] == "local-1"  # type: ignore[index,call-overload]
    executed = comfy_message(Executed("3", "3", {"images": []}), "p", 0)
    assert "files" not in executed and executed["node"] == "3"
    assert comfy_message(ExecutionStart(), "p", 12.5)["timestamp"] == 12500
