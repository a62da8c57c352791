"""Run the `tests/execution` suite of a real ComfyUI, directly or through the extension.

The suite starts its own servers with `python main.py ... --cpu [--cache-lru N]`
from the ComfyUI folder. Its files are run unmodified: a `python` shim first on
PATH turns that command into the ComfyUI venv's Python with, in both modes, a
base directory of the run's own (so the install is never written to), and in
remote mode the extension loaded through an extra-paths file, remote mode on,
and the `local` backend. That backend starts a worker on this machine whose
ComfyUI loads the same testing nodes and gets the local server's cache flags.

Results come from pytest's JUnit XML, as test id -> passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from comfy_remote_exec.comfy_env import ensure_requirements, extension_config
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.worker.comfy.comfy_process import free_port

SUITE_REQUIREMENTS = ("pytest", "websocket-client", "pytest-asyncio", "pytest-aiohttp")
SUITE_TIMEOUT = 2400


@dataclass
class SuiteResult:
    outcomes: dict[str, bool]  # test id -> passed (skips are left out)
    seconds: float
    output: str

    @property
    def passed(self) -> set[str]:
        return {test for test, ok in self.outcomes.items() if ok}


def suite_dir(install: ComfyInstall) -> Path:
    return install.root / "tests" / "execution"


def suite_key(install: ComfyInstall) -> str:
    """What a direct result depends on: ComfyUI's version, engine and suite files."""
    digest = hashlib.sha256()
    files = [install.root / "comfyui_version.py", install.root / "execution.py",
             *sorted(p for p in suite_dir(install).rglob("*.py") if "__pycache__" not in p.parts)]
    for path in files:
        digest.update(path.relative_to(install.root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def ensure_suite_requirements(install: ComfyInstall) -> None:
    python = str(install.python)
    probe = "import pytest, websocket, pytest_asyncio, pytest_aiohttp"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", *SUITE_REQUIREMENTS],
                       check=True)


def write_shim(folder: Path, install: ComfyInstall, base: Path, extra: list[str],
               env: dict[str, str]) -> Path:
    """A `python` that runs ComfyUI's venv Python, adding `extra` to `main.py` runs."""
    folder.mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    python = shlex.quote(str(install.python))
    shim = folder / "python"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = "main.py" ]; then\n'
        f"{exports}"
        f'  exec {python} "$@" --base-directory {shlex.quote(str(base))} '
        f"{' '.join(shlex.quote(a) for a in extra)}\n"
        "fi\n"
        f'exec {python} "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    return folder


def remote_setup(work: Path, install: ComfyInstall) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment that load the extension in remote mode (`local`)."""
    ensure_requirements(install.python)
    paths = extension_config(work / "extension")
    testing = suite_dir(install) / "extra_model_paths.yaml"
    env = {"REMOTE_EXEC_ENABLED": "1", "REMOTE_EXEC_BACKEND": "local",
           "REMOTE_EXEC_STATE_DIR": str(work / "state"),
           "REMOTE_EXEC_WORKER_ARGS": f"--cpu --extra-model-paths-config {testing}"}
    return ["--extra-model-paths-config", str(paths)], env


def run_suite(install: ComfyInstall, work: Path, remote: bool) -> SuiteResult:
    """Run every `test_*.py` of the install's `tests/execution`, unmodified."""
    ensure_suite_requirements(install)
    extra, env = remote_setup(work, install) if remote else ([], {})
    shims = write_shim(work / "shim", install, work / "base", extra, env)
    report = work / "junit.xml"
    cmd = [str(install.python), "-m", "pytest", "tests/execution", "-q", "-p",
           "no:cacheprovider", "--output_dir", str(work / "output"), "--port",
           str(free_port()), "--skip-timing-checks", f"--junitxml={report}"]
    proc_env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc_env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=install.root, env=proc_env, capture_output=True,
                          text=True, timeout=SUITE_TIMEOUT)
    output = proc.stdout[-20000:] + proc.stderr[-5000:]
    if not report.is_file():
        raise RuntimeError(f"ComfyUI's suite wrote no report:\n{output}")
    root = ET.parse(report).getroot()
    outcomes: dict[str, bool] = {}
    seconds = 0.0
    for suite in root.iter("testsuite"):
        seconds += float(suite.get("time", 0))
    for case in root.iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            continue
        outcomes[test] = case.find("failure") is None and case.find("error") is None
    return SuiteResult(outcomes, seconds, output)


def cached_direct_run(install: ComfyInstall, work: Path) -> SuiteResult:
    """The direct run, cached per ComfyUI (its `suite_key`) in the user's cache folder."""
    cache = Path(platformdirs.user_cache_dir("comfy-remote-exec")) / "comfyui-suite"
    path = cache / f"{suite_key(install)}.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return SuiteResult(data["outcomes"], data["seconds"], "(cached)")
    result = run_suite(install, work, remote=False)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"outcomes": result.outcomes, "seconds": result.seconds}),
                    encoding="utf-8")
    return result
