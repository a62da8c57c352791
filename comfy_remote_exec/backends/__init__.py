"""Backends: how the extension reaches a remote worker.

The extension knows only the `Backend` protocol in `base`; each module here
implements it for one kind of remote, like httpx's transports.
"""

from __future__ import annotations

from .base import Backend

__all__ = ["Backend"]
