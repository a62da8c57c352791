"""The benchmark script runs on a tiny configuration and writes every key (no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyInstall

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.comfyui
def test_bench_tiny_writes_every_key(comfy_install: ComfyInstall, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from bench.run import TARGETS

    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--tiny",
                             "--out", str(tmp_path), "--no-readme"],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["config"] == "tiny" and report["machine"]["cpus"]
    assert set(report["results"]) == set(TARGETS)
    for key, entry in report["results"].items():
        assert isinstance(entry["value"], (int, float)), key
        assert {"target", "met", "what"} <= set(entry), key
    assert (tmp_path / "latest.md").read_text().count("\n| `") == len(TARGETS)
