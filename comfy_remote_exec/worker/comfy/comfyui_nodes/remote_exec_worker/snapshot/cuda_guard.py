"""Hold CUDA back: until `release()`, torch answers "no GPU" without asking the driver.

Why: torch learns the number of CUDA devices once per process. The first
`torch.cuda.is_available()` or `device_count()` asks the driver (`cuInit`),
and c10 keeps that count for good; so one such call before a memory snapshot,
taken on a machine without a GPU, leaves the restored process without a GPU
for ever. ComfyUI asks at import even with `--cpu` (comfy/ops.py in 0.3.x and
0.26; `set_cudnn_benchmark()` and comfy-kitchen's backends in 0.26), so those
answers must come from here, not from the driver.

How: `install()` runs before torch is imported (ComfyUI's prestartup phase; the
CUDA allocator reads `PYTORCH_CUDA_ALLOC_CONF` when torch loads, so torch must
not be imported early). A finder at the front of `sys.meta_path` waits for
`torch` and, as soon as its module has run, replaces in every `torch*` module
each binding of `torch.cuda.is_available` (-> False), `device_count` (-> 0)
and `_lazy_init` (raises: whatever would initialise CUDA, a tensor's `.cuda()`
included, goes through it). Bindings of a function and of what it wraps
(`__wrapped__`) count alike, so a wrapper installed earlier is held back too.
`release()` puts every replaced binding back. `HELD` counts the calls answered
here, for the status route.

Standard library only; torch is never imported from here.
"""

from __future__ import annotations

import collections
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

HELD: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
_replaced: list[tuple[dict[str, Any], str, Any, Any]] = []  # (namespace, name, original, stub)
_finder: _AfterTorch | None = None


class CudaHeldBack(RuntimeError):
    """A call that would initialise CUDA while it is held back (before the restore)."""


def _no_gpu_count(*_: Any, **__: Any) -> int:
    HELD["device_count"] += 1
    return 0


def _not_available(*_: Any, **__: Any) -> bool:
    HELD["is_available"] += 1
    return False


def _refuse_init(*_: Any, **__: Any) -> None:
    HELD["_lazy_init"] += 1
    raise CudaHeldBack("CUDA is held back until the snapshot restore (REMOTE_EXEC_SNAPSHOT=1): "
                       "ComfyUI runs on the CPU until then")


STUBS: dict[str, Callable[..., Any]] = {
    "is_available": _not_available,
    "device_count": _no_gpu_count,
    "_lazy_init": _refuse_init,
}


def _identities(func: Any) -> list[Any]:
    """`func` and every function it wraps (`functools.wraps` chains)."""
    found: list[Any] = []
    while func is not None and not any(func is seen for seen in found):
        found.append(func)
        func = getattr(func, "__wrapped__", None)
    return found


def _hold(torch: types.ModuleType) -> None:
    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        return
    originals = {name: _identities(getattr(cuda, name, None)) for name in STUBS}
    with _lock:
        for module in list(sys.modules.values()):
            if not getattr(module, "__name__", "").startswith("torch"):
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for name, stub in STUBS.items():
                value = namespace.get(name)
                if value is not None and any(value is f for f in originals[name]):
                    namespace[name] = stub
                    _replaced.append((namespace, name, value, stub))


class _AfterTorch(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of `torch` so `_hold` runs right after it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torch":
            return None
        try:
            later = sys.meta_path[sys.meta_path.index(self) + 1:]
        except ValueError:
            return None
        for finder in later:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run = getattr(loader, "exec_module", None)
        if run is None:
            return spec

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            _hold(module)

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Hold CUDA back from now on: at once if torch is loaded, else when it loads."""
    global _finder
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda"):
        _hold(torch)
    elif _finder is None:
        _finder = _AfterTorch()
        sys.meta_path.insert(0, _finder)


def release() -> list[str]:
    """Put back every binding replaced here; returns them as `module.name` strings."""
    global _finder
    with _lock:
        if _finder is not None:
            if _finder in sys.meta_path:
                sys.meta_path.remove(_finder)
            _finder = None
        put_back = []
        for namespace, name, original, stub in reversed(_replaced):
            if namespace.get(name) is stub:
                namespace[name] = original
                put_back.append(f"{namespace.get('__name__', '?')}.{name}")
        _replaced.clear()
    return sorted(put_back)


def holding() -> bool:
    return bool(_replaced) or _finder is not None
