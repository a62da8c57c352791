"""tests/run.py, the README's test command: standard library only, arguments and exit
code passed through to pytest (its .venv set-up is what every test run goes through)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # -I: no site-packages, as on a fresh machine with only Python.
    return subprocess.run([sys.executable, "-I", str(REPO / "tests" / "run.py"), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def test_arguments_and_exit_code_pass_through() -> None:
    version = run("--version")
    assert version.returncode == 0 and "pytest" in version.stdout + version.stderr
    assert run("--venv-only").returncode == 0
    assert run("tests/no-such-test-file.py").returncode == 4  # pytest's usage error
