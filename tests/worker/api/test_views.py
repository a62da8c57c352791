"""The job API's public shapes, from job records alone: progress, times, estimates."""

from __future__ import annotations

import pytest

from comfy_remote_exec.errors import BadRequest
from comfy_remote_exec.protocol import (
    COMPLETED,
    FAILED,
    RUNNING,
    Executing,
    Lifecycle,
    Progress,
)
from comfy_remote_exec.worker.api.views import (
    DEFAULT_ESTIMATE,
    estimated_time,
    inline_mode,
    iso,
    progress,
    progress_details,
)
from comfy_remote_exec.worker.service.jobs import Job


async def test_progress_blends_nodes_and_steps() -> None:
    job = Job(id="j", nodes_total=4)
    assert progress(job) == 0
    job.life.start()
    seen = []
    for payload in (Executing("1"), Executing("2"), Progress(5, 10, "2"),
                    Progress(10, 10, "2"), Executing("3"), Executing("4")):
        await job.event(payload)
        seen.append(progress(job))
    # Half is node coverage (1, 2, 3 of 4 done), half the sampler's 10 steps, which
    # holds after the sampler's node is done.
    assert seen == [0, 12, 37, 62, 75, 87]
    assert progress_details(job) == {"current_node": "4", "nodes_completed": 3,
                                     "nodes_total": 4, "step": None}
    # A second node with steps starts the steps half over.
    await job.event(Progress(7, 7, "4"))
    assert progress_details(job)["step"] == "7/7"
    assert progress(job) == 87
    await job.event(Executing(None))
    assert progress(job) == 99, "never 100 before the job completed"
    job.life.end(COMPLETED)
    assert progress(job) == 100


def test_a_failed_job_keeps_where_it_stopped() -> None:
    job = Job(id="j", nodes_total=2, life=Lifecycle(FAILED), nodes_completed=["1"])
    assert progress(job) == 25


def test_iso_times_are_utc() -> None:
    assert iso(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(1.5) == "1970-01-01T00:00:01.500+00:00"
    assert iso(None) is None


def test_estimated_time_from_recent_runs_and_the_queue() -> None:
    new = Job(id="new", created_at=100.0)
    assert estimated_time(new, [new]) == DEFAULT_ESTIMATE
    done = [Job(id=f"d{n}", created_at=float(n),
                life=Lifecycle(COMPLETED, started_at=10.0 * n, finished_at=10.0 * n + secs))
            for n, secs in enumerate((2.0, 4.0, 9.0))]
    running = Job(id="r", created_at=50.0, life=Lifecycle(RUNNING, started_at=60.0))
    later = Job(id="later", created_at=200.0)
    assert estimated_time(new, [*done, new]) == 4  # the median run
    assert estimated_time(new, [*done, running, new, later]) == 8  # one ahead of it


@pytest.mark.parametrize(("query", "mode"), [
    ({}, "auto"), ({"inline": "all"}, "all"), ({"inline": "none"}, "none"),
    ({"base64": "1"}, "all"), ({"base64": "0"}, "auto"),
    ({"inline": "none", "base64": "1"}, "none"),
])
def test_inline_mode(query: dict[str, str], mode: str) -> None:
    assert inline_mode(query) == mode


def test_inline_mode_refuses_what_it_does_not_know() -> None:
    with pytest.raises(BadRequest):
        inline_mode({"inline": "some"})
