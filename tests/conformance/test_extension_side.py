"""The extension's side never reads a job view (`GET /v1/jobs/{id}`).

It follows the event stream and downloads the files it lands, so it never
pulls base64 it does not want, whatever a job view inlines for the job API's
other clients. Read from the source with `ast`: every string (f-strings with
their fields as `{}`) naming a job view's path must be the path of a DELETE.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTENSION_SIDE = ["comfy_remote_exec/jobapi", "comfy_remote_exec/backends",
                  "comfy_remote_exec/extension", "__init__.py"]
JOB_VIEW = re.compile(r"(^|\{\})/v1/jobs/\{\}/?$")


def text_of(node: ast.AST) -> str | None:
    """A string constant's text, or an f-string's with `{}` for each field."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def job_view_paths(source: str) -> tuple[set[int], set[int]]:
    """Lines naming a job view's path, and those of them that are a DELETE's path."""
    named, deleted = set(), set()
    for node in ast.walk(ast.parse(source)):
        text = text_of(node)
        if text is not None and JOB_VIEW.search(text):
            named.add(node.lineno)
        if isinstance(node, ast.Call) and len(node.args) >= 2 and text_of(node.args[0]) == "DELETE":
            path = text_of(node.args[1])
            if path is not None and JOB_VIEW.search(path):
                deleted.add(node.args[1].lineno)
    return named, deleted


def test_the_check_sees_a_job_view_read() -> None:
    named, deleted = job_view_paths(
        'await self._call("GET", f"/v1/jobs/{job_id}", "x")\n'
        'await self._call("DELETE", f"/v1/jobs/{job_id}", "x")\n'
        'client.get(f"{url}/v1/jobs/{job_id}/events")\n')
    assert (named, deleted) == ({1, 2}, {2})


def test_extension_side_reads_no_job_view() -> None:
    files = [p for entry in EXTENSION_SIDE
             for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))]
    assert len(files) > 10
    reads = []
    for path in files:
        named, deleted = job_view_paths(path.read_text(encoding="utf-8"))
        reads += [f"{path.relative_to(ROOT)}:{line}" for line in sorted(named - deleted)]
    assert reads == []
    script = (ROOT / "js" / "remote_exec.js").read_text(encoding="utf-8")
    assert "/v1/jobs" not in script
