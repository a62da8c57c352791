"""The job APIs' shapes as JSON Schemas (`schemas/`), and which answer each one checks.

The schemas are written from `shared/specs/job-apis.md`, the shapes the job
APIs' existing clients speak; they leave room for fields of our own beside
theirs. `answer_schema` names the schema of an HTTP answer by its method, path
and status; `check` validates with jsonschema (draft 2020-12, `$ref`s across
the files through a `referencing` registry) and fails with every violation.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "schemas"


@cache
def registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    schema = registry().contents(f"{name}.json")
    return Draft202012Validator(schema, registry=registry())


def violations(name: str, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator(name).iter_errors(instance)]


def check(name: str, instance: Any) -> None:
    found = violations(name, instance)
    assert not found, f"{name}.json: " + "; ".join(found)


# (method, path pattern, status) -> schema; None where the spec has no shape to check
# (our own /v1 errors, which the spec does not give).
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/v1/jobs$"), "submit"),
    ("GET", re.compile(r"^/v1/jobs$"), "job_list"),
    ("GET", re.compile(r"^/v1/jobs/[^/]+$"), "job"),
    ("DELETE", re.compile(r"^/v1/jobs/[^/]+$"), "job"),
    ("POST", re.compile(r"^/submit_workflow$"), "polling_submit"),
    ("GET", re.compile(r"^/status/[^/]+$"), "polling_status"),
]


def answer_schema(method: str, path: str, status: int, body: Any) -> str | None:
    """The schema an answer must match, or None (a `/v1` error: the spec has none)."""
    for verb, pattern, name in _ROUTES:
        if verb != method or not pattern.match(path):
            continue
        if name.startswith("polling"):
            if status >= 400:
                return "polling_error"
            if name == "polling_status":
                state = body.get("status") if isinstance(body, dict) else None
                return {"RUNNING": "polling_running", "COMPLETED": "polling_completed",
                        "FAILED": "polling_failed"}.get(str(state), "polling_running")
            return name
        return name if status < 400 else None
    raise AssertionError(f"no schema for {method} {path}")


# The HTTP statuses the spec gives each answer.
STATUSES = {"submit": {202}, "job_list": {200}, "job": {200, 202}, "polling_submit": {202},
            "polling_running": {202}, "polling_completed": {200}, "polling_failed": {200},
            "polling_error": {400, 401, 404, 500}}


def check_answer(method: str, path: str, status: int, body: Any) -> str | None:
    """Validate one answer, its status too; returns the schema's name (None when
    there is none). `path` may carry a query."""
    path = path.partition("?")[0]
    name = answer_schema(method, path, status, body)
    if name is not None:
        assert status in STATUSES[name], f"{method} {path} answered {status} for {name}"
        check(name, body)
    return name
