"""ComfyUI's own `tests/execution` suite is the contract for "indistinguishable".

It runs unmodified twice against the ComfyUI under test: directly, and through
the extension in remote mode with a worker that holds the same testing nodes
and uses the same cache flag (see `comfy_suite`). Every test that passes
directly must pass remotely. The direct result is cached per ComfyUI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyInstall

from .comfy_suite import cached_direct_run, run_suite, suite_dir

pytestmark = pytest.mark.comfyui

MIN_DIRECT_PASSES = {"0.3.64": 180}


def version(install: ComfyInstall) -> str:
    text = (install.root / "comfyui_version.py").read_text(encoding="utf-8")
    return text.split("__version__", 1)[1].split('"')[1]


@pytest.mark.timeout(3600)
def test_comfyui_execution_suite_passes_remotely(comfy_install: ComfyInstall,
                                                 tmp_path: Path) -> None:
    if not suite_dir(comfy_install).is_dir():
        pytest.skip(f"{comfy_install.root} has no tests/execution")
    direct = cached_direct_run(comfy_install, tmp_path / "direct")
    assert len(direct.passed) >= MIN_DIRECT_PASSES.get(version(comfy_install), 1), \
        direct.output
    remote = run_suite(comfy_install, tmp_path / "remote", remote=True)
    lost = sorted(direct.passed - remote.passed)
    assert not lost, f"{len(lost)} tests pass directly but not remotely: {lost}\n" \
        f"{remote.output}"
