"""Keep credentials that ride in URLs out of the logs.

httpx logs every request's URL at INFO, and ComfyUI runs with INFO on. Some
URLs here are credentials themselves: presigned S3 URLs for large inputs and
outputs, and media URLs a client chose. The filter drops the query string
from the URLs httpx logs; the method, host, path and status stay.
"""

from __future__ import annotations

import logging
from typing import Any

REDACTED = "?[query hidden]"


def strip_query(value: Any) -> Any:
    text = str(value)
    if "://" in text and "?" in text:
        return text.split("?", 1)[0] + REDACTED
    return value


class HideUrlQueries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(strip_query(a) for a in record.args)
        return True


def hide_url_queries(logger_name: str = "httpx") -> None:
    """Install the filter once on `logger_name` (httpx's request log by default)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, HideUrlQueries) for f in logger.filters):
        logger.addFilter(HideUrlQueries())
