"""ComfyUI's verdict on a prompt, made fit for a remote run.

The extension refuses what ComfyUI itself would refuse, with the same 400
`{error, node_errors}`: it runs ComfyUI's own `execution.validate_prompt`
(through `Host.validate`). Two checks are not this machine's to make, because
the remote may hold what the local install lacks:
- a node type the local ComfyUI does not know: the host then does not
  validate at all, and the remote's own validation decides;
- a model file missing from a local loader's list (`value_not_in_list` on a
  model-like value): that error is dropped here, and an output whose only
  errors were such becomes good again.
Pure functions over ComfyUI's result tuple, so they test without ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

# Model file extensions: ComfyUI's `supported_pt_extensions` plus the common ones of
# custom loaders (GGUF, ONNX).
MODEL_EXTS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl",
                        ".sft", ".gguf", ".onnx"})


@dataclass
class Verdict:
    """What `POST /prompt` answers: 200 with `outputs` to run, or 400 with `error`."""

    ok: bool
    error: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)

    def refusal(self) -> dict[str, Any]:
        """The 400 body, exactly ComfyUI's."""
        return {"error": self.error, "node_errors": self.node_errors}


def is_model_value(value: object) -> bool:
    return isinstance(value, str) and PurePosixPath(value.replace("\\", "/")).suffix.lower() \
        in MODEL_EXTS


def _remote_may_have(error: dict[str, Any]) -> bool:
    if error.get("type") != "value_not_in_list":
        return False
    extra = error.get("extra_info")
    return isinstance(extra, dict) and is_model_value(extra.get("received_value"))


def lenient(result: tuple[Any, ...], targets: list[str] | None = None) -> Verdict:
    """ComfyUI's `(valid, error, good_outputs, node_errors)`, less model-file errors.

    `targets` are the prompt's `partial_execution_targets` (None: every output).
    """
    valid, error, good, node_errors = result
    if valid:
        return Verdict(True, None, list(good), dict(node_errors))
    if not node_errors:  # a prompt-level refusal (no outputs, bad node...)
        return Verdict(False, error, list(good), dict(node_errors))
    kept: dict[str, Any] = {}
    failed: set[str] = set()
    for node_id, info in node_errors.items():
        errors = [e for e in info.get("errors", []) if not _remote_may_have(e)]
        if errors:
            kept[node_id] = {**info, "errors": errors}
            failed.update(str(o) for o in info.get("dependent_outputs", []))
    if len(kept) == len(node_errors):
        return Verdict(False, error, list(good), dict(node_errors))
    dependent = {str(o) for info in node_errors.values()
                 for o in info.get("dependent_outputs", [])}
    outputs = [*good, *sorted(dependent - failed - set(good))]
    if targets is not None:
        outputs = [o for o in outputs if o in targets]
    if not outputs:
        details = "\n".join(f"{e.get('message')}: {e.get('details')}"
                            for info in kept.values() for e in info["errors"])
        return Verdict(False, {"type": "prompt_outputs_failed_validation",
                               "message": "Prompt outputs failed validation",
                               "details": details, "extra_info": {}}, [], kept)
    return Verdict(True, None, outputs, kept)
