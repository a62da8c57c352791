"""The local ComfyUI extension: takes Run remote and makes it look local.

`install()` is called by the repository's root `__init__.py` when ComfyUI
loads it; only `adapter` imports ComfyUI, everything else here is plain code.
"""

from __future__ import annotations

import logging
from typing import Any

COMFYUI_MODULES = frozenset({"server", "folder_paths", "execution", "nodes", "comfy_api",
                             "protocol"})


def install() -> Any:
    """Install the hooks into the running ComfyUI; a no-op outside ComfyUI.

    The root package is also imported by tools such as pytest, where ComfyUI's
    modules do not exist. A missing dependency of our own still raises.
    """
    try:
        from .adapter import install as install_hooks
    except ImportError as exc:
        if exc.name in COMFYUI_MODULES:
            logging.getLogger(__name__).debug("not inside ComfyUI: hooks not installed")
            return None
        raise
    return install_hooks()
