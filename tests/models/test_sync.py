"""`python -m comfy_remote_exec models sync`: the local ComfyUI's model folders
against a worker app on loopback (http backend), through the real command line.

A dry run lists what would ship and ships nothing; a sync ships it (extra
model paths included) and a second finds nothing to do; a same-name file with
other bytes is a conflict (exit status 1), never overwritten; `stack` still
dispatches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest

from comfy_remote_exec.models.sync import folder_roots, local_models
from tests.model_worker import TOKEN, ModelWorker, model_worker

ROOT = Path(__file__).resolve().parents[2]


def fake_comfyui(root: Path) -> Path:
    comfy = root / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    (comfy / ".venv" / "bin").mkdir(parents=True)
    (comfy / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (comfy / "models" / "loras" / "sub").mkdir(parents=True)
    (comfy / "models" / "loras" / "sub" / "a.safetensors").write_bytes(b"a" * 1000)
    (comfy / "models" / "loras" / ".hidden.safetensors").write_bytes(b"h")
    (comfy / "models" / "checkpoints").mkdir()
    (comfy / "models" / "checkpoints" / "c.ckpt").write_bytes(b"c" * 2000)
    (root / "elsewhere" / "vae").mkdir(parents=True)
    (root / "elsewhere" / "vae" / "v.safetensors").write_bytes(b"v" * 500)
    (comfy / "extra_model_paths.yaml").write_text(
        f"mine:\n  base_path: {root / 'elsewhere'}\n  vae: vae\n")
    return comfy


async def cli(comfy: Path, worker: ModelWorker, state: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "REMOTE_EXEC_BACKEND": "http", "REMOTE_EXEC_URL": worker.url,
           "REMOTE_EXEC_TOKEN": TOKEN, "REMOTE_EXEC_CONFIG": str(state / "none.yaml"),
           "REMOTE_EXEC_STATE_DIR": str(state), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfy_remote_exec", *args, "--comfyui", str(comfy),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def test_the_local_layout_includes_extra_model_paths(tmp_path: Path) -> None:
    comfy = fake_comfyui(tmp_path)
    found = local_models(folder_roots(comfy))
    assert set(found["loras"]) == {"sub/a.safetensors"}
    assert set(found["checkpoints"]) == {"c.ckpt"}
    assert found["vae"]["v.safetensors"] == tmp_path / "elsewhere" / "vae" / "v.safetensors"


async def test_dry_run_then_sync_then_nothing_left(tmp_path: Path) -> None:
    comfy = fake_comfyui(tmp_path)
    async with model_worker(tmp_path / "worker") as worker:
        code, out = await cli(comfy, worker, tmp_path / "state", "models", "sync", "--dry-run")
        assert code == 0, out
        assert "would ship: loras/sub/a.safetensors" in out
        assert "would ship: vae/v.safetensors" in out
        assert not worker.models.exists() or not any(worker.models.rglob("*.*"))

        code, out = await cli(comfy, worker, tmp_path / "state", "models", "sync",
                              "--folder", "loras")
        assert code == 0, out
        assert (worker.models / "loras" / "sub" / "a.safetensors").read_bytes() == b"a" * 1000
        assert not (worker.models / "vae").exists()

        code, out = await cli(comfy, worker, tmp_path / "state", "models", "sync")
        assert code == 0, out
        assert (worker.models / "vae" / "v.safetensors").read_bytes() == b"v" * 500
        code, out = await cli(comfy, worker, tmp_path / "state", "models", "sync")
        assert code == 0 and "3 already on the remote, 0 to ship" in out, out


async def test_a_conflict_is_named_and_never_overwritten(tmp_path: Path) -> None:
    comfy = fake_comfyui(tmp_path)
    async with model_worker(tmp_path / "worker") as worker:
        (worker.models / "checkpoints").mkdir(parents=True)
        (worker.models / "checkpoints" / "c.ckpt").write_bytes(b"X" * 2000)  # same size
        code, out = await cli(comfy, worker, tmp_path / "state", "models", "sync",
                              "--folder", "checkpoints")
        assert code == 1, out
        assert "conflict: checkpoints/c.ckpt" in out
        assert (worker.models / "checkpoints" / "c.ckpt").read_bytes() == b"X" * 2000


@pytest.mark.parametrize("args,expect", [([], "models sync"),
                                         (["stack", "--help"], "install-nodes"),
                                         (["models", "sync", "--help"], "--dry-run")])
def test_subcommands_dispatch(args: list[str], expect: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from comfy_remote_exec.__main__ import main

    with contextlib.suppress(SystemExit):
        main(args)
    out = capsys.readouterr()
    assert expect in out.out + out.err
