"""The local ComfyUI extension: takes Run remote and makes it look local.

`install()` is called by the repository's root `__init__.py` when ComfyUI
loads it; only `adapter` imports ComfyUI, everything else here is plain code.
"""

from __future__ import annotations

from typing import Any


def install() -> Any:
    from .adapter import install as install_hooks

    return install_hooks()
