"""ComfyUI entry point for comfy-remote-exec (loaded from custom_nodes/ or extra paths).

Kept thin on purpose: it declares no nodes, serves the frontend from ./js,
and installs the remote-execution hooks (prompt interception, relay, outputs,
queue and history) from `comfy_remote_exec.extension`.
"""

import os
import sys

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
WEB_DIRECTORY = "./js"

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from comfy_remote_exec.extension import install  # noqa: E402

install()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
