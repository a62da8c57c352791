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
    for key in ("overhead_tiny_ms", "overhead_ratio_upscale"):
        low, high = report["results"][key]["interval"]
        assert low <= high, key


def test_the_interval_spans_what_resampling_the_pairs_gives() -> None:
    """A constant ratio has no spread; a noisy one gets an interval around its value,
    the same on every call (the bootstrap's seed is fixed)."""
    sys.path.insert(0, str(REPO))
    import random
    import statistics

    from bench.figures import interval

    def ratio(d: list[float], e: list[float]) -> float:
        return statistics.median(e) / statistics.median(d)

    direct = [0.5 + 0.001 * i for i in range(30)]
    low, high = interval(direct, [1.1 * d for d in direct], ratio)
    assert low == pytest.approx(1.1) and high == pytest.approx(1.1)
    rng = random.Random(7)
    noisy = [d * 1.02 + rng.gauss(0, 0.02) for d in direct]
    low, high = interval(direct, noisy, ratio)
    assert low < ratio(direct, noisy) < high and high - low > 0.01
    assert interval(direct, noisy, ratio) == (low, high)
