"""`Content-Range`, both ways: a blob's part going up, an output's part coming down.

Large files cross in parts because a platform may cut any one request (Modal
cuts every web request at 150 s): an input goes up as `PUT /v1/blobs/{sha256}`
parts, each saying which bytes it holds (`bytes START-END/TOTAL`, or
`bytes */TOTAL` to ask how much is stored), and an output comes down as
`Range` requests, each answered `206` with the bytes it holds. Both sides
parse the header here, and a malformed one is a `BadRequest` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadRequest

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ContentRange:
    """`bytes START-END/TOTAL` (END inclusive), or `bytes */TOTAL` (no bytes: a
    status query going up, an unsatisfiable range coming down)."""

    start: int | None
    end: int | None
    total: int

    @property
    def length(self) -> int:
        return 0 if self.start is None or self.end is None else self.end - self.start + 1

    def header(self) -> str:
        if self.start is None or self.end is None:
            return f"bytes */{self.total}"
        return f"bytes {self.start}-{self.end}/{self.total}"

    @classmethod
    def of(cls, start: int, stop: int, total: int) -> ContentRange:
        """The part `[start, stop)` of a file of `total` bytes (`stop > start`)."""
        return cls(start, stop - 1, total)

    @classmethod
    def parse(cls, header: str) -> ContentRange:
        match = _CONTENT_RANGE.match(header)
        if match is None:
            raise BadRequest(f"Content-Range {header!r} is not 'bytes START-END/TOTAL' "
                             "or 'bytes */TOTAL'", code="bad_range")
        start, end, total = match.groups()
        if start is None or end is None:
            return cls(None, None, int(total))
        found = cls(int(start), int(end), int(total))
        if found.length <= 0 or int(end) >= found.total:
            raise BadRequest(f"Content-Range {header!r} names no bytes of the file",
                             code="bad_range")
        return found
