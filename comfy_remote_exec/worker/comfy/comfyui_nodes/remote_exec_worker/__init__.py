"""Loaded into the worker's own ComfyUI (never the user's): small hooks, no nodes.

The worker points shipped inputs at content-addressed paths
(`remote_exec/<sha256>/photo.png`) so jobs never share a file and ComfyUI's
cache still recognises the same bytes. Nodes that save the `prompt` as
metadata (SaveImage's PNG chunk, SaveAnimatedWEBP, SaveVideo, ...) read it
from `DynamicPrompt.get_original_prompt()`. This hook gives them the
prompt as the user wrote it: each node's `_meta["remote_exec_user_inputs"]`
holds the user's own values, put back here and then dropped. So a file saved
remotely carries the same metadata as one saved locally.

A ComfyUI older than v0.26 also gets v0.26's progress throttle (`_throttle_progress`):
a bar's updates at most every 100 ms, so a remote run relays what a local run on
today's ComfyUI shows, and a fast loop of ticks does not wake the worker, the
user's ComfyUI and the browser 30 times a second while torch wants every core.

In snapshot mode (`REMOTE_EXEC_SNAPSHOT=1`) the prestartup script has loaded
the `snapshot` package beside this file, and this module adds its restore and
status routes to ComfyUI's server (see snapshot/__init__.py).

Self-contained on purpose: it runs in ComfyUI's Python, which need not have
comfy_remote_exec's dependencies.
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any

USER_VALUES = "remote_exec_user_inputs"  # keep equal to worker.inputs.prepare.USER_VALUES
# ComfyUI v0.26's rule (comfy/utils.py, PROGRESS_THROTTLE_MIN_*): an update goes when
# 100 ms passed and the bar moved 0.5 % since the last one that went; the first, the
# last and any with a preview always go.
THROTTLE_INTERVAL = 0.1
THROTTLE_PERCENT = 0.5

NODE_CLASS_MAPPINGS: dict[str, Any] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


def user_prompt(prompt: dict[str, Any]) -> dict[str, Any]:
    """`prompt` with every node's user values restored and our `_meta` key removed."""
    if not any(isinstance(n, dict) and USER_VALUES in (n.get("_meta") or {})
               for n in prompt.values()):
        return prompt
    restored = copy.deepcopy(prompt)
    for node in restored.values():
        meta = node.get("_meta") if isinstance(node, dict) else None
        if not isinstance(meta, dict) or USER_VALUES not in meta:
            continue
        node.setdefault("inputs", {}).update(meta.pop(USER_VALUES) or {})
        if not meta:
            del node["_meta"]
    return restored


def _install() -> None:
    try:
        from comfy_execution import graph
    except ImportError:  # imported outside ComfyUI (the unit tests): nothing to hook
        return
    cls = graph.DynamicPrompt
    if getattr(cls, "_remote_exec_hooked", False):
        return
    original = cls.get_original_prompt

    def get_original_prompt(self: Any) -> Any:
        prompt = original(self)
        cached = getattr(self, "_remote_exec_user_prompt", None)
        if cached is None or cached[0] is not prompt:
            cached = (prompt, user_prompt(prompt) if isinstance(prompt, dict) else prompt)
            self._remote_exec_user_prompt = cached
        return cached[1]

    cls.get_original_prompt = get_original_prompt
    cls._remote_exec_hooked = True


def _throttle_progress() -> None:
    """Give a ComfyUI without it (0.3.64) v0.26's progress throttle. A held-back
    update still moves the bar's `current` and still stops the node on an interrupt
    (the check ComfyUI's hook makes)."""
    try:
        from comfy import model_management, utils
    except ImportError:
        return
    bar = utils.ProgressBar
    if hasattr(utils, "PROGRESS_THROTTLE_MIN_INTERVAL") or hasattr(bar, "_remote_exec_sent"):
        return
    update = bar.update_absolute

    def update_absolute(self: Any, value: Any, total: Any = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        value = min(value, self.total)
        now, sent = time.perf_counter(), self._remote_exec_sent
        if self.hook is not None and preview is None and sent is not None \
                and value < self.total:
            moved = 100.0 * (value - max(0, sent[1])) / self.total if self.total > 0 else 100.0
            if now - sent[0] < THROTTLE_INTERVAL or moved < THROTTLE_PERCENT:
                self.current = value
                model_management.throw_exception_if_processing_interrupted()
                return
        self._remote_exec_sent = (now, value)
        update(self, value, total, preview)

    bar._remote_exec_sent = None  # (time, value) of the last update that went
    bar.update_absolute = update_absolute


def _snapshot_routes() -> None:
    snapshot = sys.modules.get("remote_exec_snapshot")  # loaded by prestartup_script.py
    if snapshot is not None:
        snapshot.add_routes()


_install()
_throttle_progress()
_snapshot_routes()
