"""A job's GPU seconds: what the remote was busy with on its behalf, for cost.

Both sides read it: the worker fills it into its job record and the terminal
`job_status` event, the RunPod backend refines it from RunPod's own figures,
and the extension prices it (`extension/cost.py`). Three parts, kept apart
because they are billed alike but mean different things to a user:

- `queue_wait_s`: accepted → started, less any cold start inside that span
  (a job waiting for another job, or for a serverless worker to be free);
- `cold_start_s`: worker (or container) process start → ComfyUI ready, for
  the first job after that start; 0 for every later job;
- `execution_s`: started → ended (ComfyUI ran the graph).

`gpu_seconds` is their sum: what a per-second price multiplies. Idle time a
platform keeps a container warm after a job (Modal's `scaledown_window`,
RunPod's idle timeout) is billed but belongs to no job, so it is not here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import JsonObject

FIELDS = ("queue_wait_s", "cold_start_s", "execution_s")


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Seconds two spans share."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


@dataclass(frozen=True, slots=True)
class JobTiming:
    queue_wait_s: float = 0.0
    cold_start_s: float = 0.0
    execution_s: float = 0.0

    @property
    def gpu_seconds(self) -> float:
        return self.queue_wait_s + self.cold_start_s + self.execution_s

    def to_dict(self) -> JsonObject:
        return {"queue_wait_s": round(self.queue_wait_s, 3),
                "cold_start_s": round(self.cold_start_s, 3),
                "execution_s": round(self.execution_s, 3)}

    @classmethod
    def parse(cls, data: Any) -> JobTiming | None:
        """From its dict; None for anything that is not one (an older worker sends none)."""
        if not isinstance(data, dict):
            return None
        values = []
        for name in FIELDS:
            value = data.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                return None
            values.append(float(value))
        return cls(*values)

    @classmethod
    def measure(cls, created: float, started: float | None, finished: float | None,
                cold_start: tuple[float, float] | None = None) -> JobTiming:
        """From a job's times (Unix seconds). `cold_start` is the (process start, ready)
        span the job claimed; the part of it inside the wait is not counted twice."""
        end = finished if finished is not None else created
        begin = started if started is not None else end
        wait = max(0.0, begin - created)
        cold = 0.0
        if cold_start is not None:
            cold = max(0.0, cold_start[1] - cold_start[0])
            wait = max(0.0, wait - overlap(cold_start, (created, begin)))
        execution = max(0.0, end - started) if started is not None else 0.0
        return cls(wait, cold, execution)


_IMPORTED_AT = time.time()


def process_started_at() -> float:
    """When this process started (Unix seconds): from Linux's `/proc`, else the time
    this module was imported (soon after the start, in the worker and the handler)."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(stat[19])  # starttime: field 22, counted after "pid (comm) "
        boot = next(float(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return min(boot + ticks / os.sysconf("SC_CLK_TCK"), _IMPORTED_AT)
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT
