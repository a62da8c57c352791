#!/usr/bin/env python3
"""The README's test command: `python tests/run.py [pytest args]`.

Why it exists: a fresh clone has only Python, not pytest. This script, standard
library only, creates `.venv` in the repository when it is missing, installs
`.[test]` into it only when `pyproject.toml` changed since the last install (a
hash stamp inside `.venv`), then runs `.venv`'s `python -m pytest -q` with the
given arguments and exits with pytest's code. `--venv-only` stops after the
set-up (`.ci/run` uses it before ruff and mypy).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
STAMP = VENV / ".remote-exec-test-install"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    python = venv_python()
    if not python.exists():
        print(f"[tests/run.py] creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.is_file() or STAMP.read_text().strip() != wanted:
        print("[tests/run.py] installing .[test] into .venv", file=sys.stderr)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "-e", ".[test]"], cwd=REPO)
        if pip.returncode:
            raise SystemExit(f"[tests/run.py] pip install -e '.[test]' failed ({pip.returncode})")
        STAMP.write_text(wanted + "\n")
    return python


def main(argv: list[str]) -> int:
    python = ensure_venv()
    if argv == ["--venv-only"]:
        return 0
    return subprocess.run([str(python), "-m", "pytest", "-q", *argv], cwd=REPO).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
