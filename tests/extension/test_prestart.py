"""The `local` worker starts at ComfyUI's prestartup, and the extension adopts it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from comfy_remote_exec.backends import registry
from comfy_remote_exec.backends.registry import BackendContext, BackendSpec
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.extension.prestart import cache_flags, prestart

from ..helpers import workflow
from .conftest import connected, local_comfy


@pytest.fixture
def recorded() -> Iterator[list[BackendContext]]:
    """A backend registered for the test that records what `prestart` gives it."""
    calls: list[BackendContext] = []
    spec = registry.register(BackendSpec("prestart-probe", "test", lambda ctx: None,  # type: ignore[arg-type,return-value]
                                         prestart=calls.append))
    yield calls
    registry._specs.pop(spec.name)


def test_prestart_asks_the_configured_backend_only_with_remote_mode_on(
        tmp_path: Path, recorded: list[BackendContext]) -> None:
    env = {"REMOTE_EXEC_BACKEND": "prestart-probe", "REMOTE_EXEC_STATE_DIR": str(tmp_path),
           "REMOTE_EXEC_CONFIG": str(tmp_path / "none.yaml")}
    args = SimpleNamespace(cache_lru=0, cache_none=True, cache_ram=[])
    assert prestart(user_dir=tmp_path, comfyui_root=tmp_path, args=args, env=env) is None
    assert recorded == [], "remote mode is off"

    settings = tmp_path / "default" / "comfy.settings.json"
    settings.parent.mkdir()
    settings.write_text('{"RemoteExec.Enabled": true}')
    assert prestart(user_dir=tmp_path, comfyui_root=tmp_path, args=args,
                    env=env) == "prestart-probe"
    (ctx,) = recorded
    assert ctx.comfy_args == ("--cache-none",) and ctx.state_dir == tmp_path


def test_a_failing_prestart_never_stops_comfyui(tmp_path: Path) -> None:
    def broken(ctx: BackendContext) -> None:
        raise OSError("no room")

    spec = registry.register(BackendSpec("prestart-broken", "test", lambda ctx: None,  # type: ignore[arg-type,return-value]
                                         prestart=broken))
    try:
        env = {"REMOTE_EXEC_BACKEND": spec.name, "REMOTE_EXEC_ENABLED": "1",
               "REMOTE_EXEC_CONFIG": str(tmp_path / "none.yaml")}
        assert prestart(user_dir=tmp_path, comfyui_root=tmp_path, args=None, env=env) is None
    finally:
        registry._specs.pop(spec.name)


def test_cache_flags_follow_comfyuis_arguments() -> None:
    assert cache_flags(SimpleNamespace(cache_lru=10)) == ["--cache-lru", "10"]
    assert cache_flags(SimpleNamespace(cache_classic=True)) == ["--cache-classic"]
    assert cache_flags(SimpleNamespace(cache_ram=[4.0])) == ["--cache-ram", "4.0"]
    assert cache_flags(SimpleNamespace()) == []


def workers_of(pid: int) -> list[int]:
    """The worker processes started by `pid` (children running comfy_remote_exec.worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"comfy_remote_exec.worker" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.comfyui
async def test_the_local_worker_starts_before_torch_and_serves_the_first_run(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads child processes from /proc (Linux)")
    proc = local_comfy(comfy_install, tmp_path,
                       {"REMOTE_EXEC_ENABLED": "1", "REMOTE_EXEC_BACKEND": "local",
                        "REMOTE_EXEC_CONFIG": str(tmp_path / "none.yaml")})
    await proc.start()
    try:
        log = proc.log_tail
        started = next(i for i, line in enumerate(log) if "starting alongside ComfyUI" in line)
        torch = next(i for i, line in enumerate(log) if "pytorch version" in line)
        assert started < torch, "the worker is spawned before ComfyUI imports torch"
        async with connected(proc.url) as client:
            _, messages = await client.run(workflow("invert"), timeout=180)
        assert "execution_success" in [m.type for m in messages], messages
        assert proc.pid is not None and len(workers_of(proc.pid)) == 1, \
            "the prestarted worker was adopted, no second one started"
    finally:
        await proc.stop()
    assert os.path.isdir(tmp_path / "state" / "worker")
