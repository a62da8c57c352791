"""ComfyUI frontends for the browser tests: the one a ComfyUI pins, or a PyPI release.

ComfyUI serves another frontend with `--front-end-root DIR`, where DIR is the
`static` folder of a `comfyui-frontend-package` wheel. A release is installed
once with pip (`--target`, without dependencies) into a cache folder and reused
by later runs; nothing is installed into any ComfyUI's environment.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from comfy_remote_exec.discovery import ComfyInstall

PINNED = "pinned"
# The newest frontend on PyPI when issue 8 was written.
NEWEST = "1.58.1"
PACKAGE = "comfyui-frontend-package"


class FrontendUnavailable(Exception):
    """pip could not install the frontend (no index, no such release)."""


def frontend_root(version: str, cache: Path) -> Path:
    """The `static` folder of `comfyui-frontend-package==version`, installed under `cache`."""
    target = cache / version
    static = target / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static
    partial = cache / f"{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--target", str(partial), f"{PACKAGE}=={version}"],
        capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode or not (partial / "comfyui_frontend_package" / "static").is_dir():
        shutil.rmtree(partial, ignore_errors=True)
        raise FrontendUnavailable(f"pip install {PACKAGE}=={version} failed:\n"
                                  f"{proc.stderr[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return static


def pinned_version(comfy: ComfyInstall) -> str | None:
    """The frontend release a ComfyUI's requirements.txt pins, if it pins one."""
    try:
        text = (comfy.root / "requirements.txt").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(rf"^{PACKAGE}==([\w.]+)", text, re.MULTILINE)
    return found.group(1) if found else None


def serves_jobs_api(comfy: ComfyInstall) -> bool:
    """Whether this ComfyUI serves `/api/jobs`, which the newer frontends' panels read."""
    return (comfy.root / "comfy_execution" / "jobs.py").is_file()
