"""The backend registry: one list, each backend declared by its own module."""

from __future__ import annotations

import json
import subprocess
import sys

from comfy_remote_exec.backends import registry
from comfy_remote_exec.config import resolve, token_for

from ..extension.conftest import REPO

TOY = "tests.fixtures.toy_backend"


def test_the_built_in_backends_register_themselves() -> None:
    assert registry.names()[:4] == ("local", "http", "runpod", "modal")
    runpod = registry.get("runpod")
    assert runpod is not None and runpod.credential_env == "RUNPOD_API_KEY"
    assert registry.get("local").endpoint == ""  # type: ignore[union-attr]


def test_a_toy_backend_touches_only_its_own_module() -> None:
    """In a fresh process, with the toy module named in the environment: it is listed,
    configurable with its own credential, and its factory builds it."""
    code = """
import json
from pathlib import Path
from comfy_remote_exec.backends import registry
from comfy_remote_exec.backends.registry import BackendContext
from comfy_remote_exec.config import resolve
cfg = resolve({"RemoteExec.Backend": "toy", "RemoteExec.EndpointURL": "http://toy"},
              {"TOY_TOKEN": "t"}, {})
spec = registry.get("toy")
backend = spec.factory(BackendContext(url=cfg.url, token=cfg.token, env={},
                                      comfyui_root=Path("."), state_dir=Path(".")))
print(json.dumps([list(registry.names()), cfg.url, cfg.token, backend.name]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"REMOTE_EXEC_BACKEND_MODULES": TOY, "PATH": ""},
                         check=True)
    names, url, token, name = json.loads(out.stdout)
    assert names[-1] == "toy" and url == "http://toy" and token == "t" and name == "toy"


def test_config_reads_each_backends_own_keys() -> None:
    secrets = {"runpod": {"endpoint_id": "abc", "api_key": "k"}, "http": {"token": "w"}}
    cfg = resolve({"RemoteExec.Backend": "runpod"}, {}, secrets)
    assert (cfg.url, cfg.token) == ("abc", "k")
    assert token_for("http", {}, secrets) == "w"
    assert resolve({"RemoteExec.Backend": "local", "RemoteExec.EndpointURL": "x"}, {},
                   {}).url is None, "local takes its URL from the launcher only"
