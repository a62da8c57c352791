"""ComfyUI runs this before it imports torch (main.py's prestartup phase, 0.3.x and 0.26).

With `REMOTE_EXEC_SNAPSHOT=1`, it loads the `snapshot` package beside it as
`remote_exec_snapshot` (the node module finds it there to add its routes) and
calls its `install()`: ComfyUI then starts on the CPU without touching CUDA,
until the restore. Without it, nothing happens. See snapshot/__init__.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys

ENV = "REMOTE_EXEC_SNAPSHOT"  # keep equal to comfy_env.SNAPSHOT_ENV
MODULE = "remote_exec_snapshot"


def _load_snapshot() -> None:
    if MODULE in sys.modules:
        return
    init = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snapshot", "__init__.py")
    spec = importlib.util.spec_from_file_location(MODULE, init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE]
        raise
    module.install()


if os.environ.get(ENV) == "1":
    _load_snapshot()
