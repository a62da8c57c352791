"""Re-run ComfyUI's device detection in a running ComfyUI, as if it had started on the GPU.

Why this shape: ComfyUI decides its device in module bodies, at import:
comfy.model_management (cpu_state, vram_state, total_vram, attention and
dtype policy, streams, pinned memory), and modules that read it then
(comfy.ops: SDPA priority, cuDNN workarounds; comfy.ldm.modules.attention:
`optimized_attention`, which ~40 model modules import by value;
comfy.ldm.modules.diffusionmodules.model: xformers for the VAE). Which values
those bodies compute differs between versions (0.3.64 and 0.26 differ a
lot), so rather than recompute a hand-kept list of values, `rerun` executes
each module's own code again, in a scratch namespace, and merges the result
into the live module:

- functions and classes keep their live objects (other modules and custom
  nodes hold them, and may have patched them), unless the new run defined a
  different function under that name (a conditional `def`, such as ops.py's
  `scaled_dot_product_attention` when CUDA is there): that one is adopted,
  rebound to the live module's globals;
- a name bound to one of the module's functions (`optimized_attention =
  attention_pytorch`) gets the live function of that name; an enum member of
  the module's enums (`vram_state`) the live enum's member;
- plain values (numbers, strings, tuples, None, torch devices and dtypes),
  functions from other modules, and names the live module lacks are adopted:
  they are the detection's results;
- containers, locks and other objects keep the live ones (loaded models,
  caches, the interrupt lock); a dict only gains the keys it lacked;
- a function value that changed (`optimized_attention`) is also rebound in
  every other loaded module that imported it under the same name.

Then what ComfyUI does elsewhere at start, after those imports: comfy-kitchen's
backends register again (each asked `torch.cuda.is_available()` at import),
0.26's `set_cudnn_benchmark()` runs, and 0.26's DynamicVRAM set-up from main.py
(comfy-aimdo devices, `ModelPatcherDynamic`) is replayed when ComfyUI would
have enabled it. Last, models loaded on the CPU before the restore are
unloaded and ComfyUI's execution cache cleared (`_forget_cpu_work`).
`DEVICE_MODULES` is checked against the source of each ComfyUI under test
(tests/worker/comfy/test_snapshot_hook.py).

Standard library at import; torch and ComfyUI are used when `run()` is called.
"""

from __future__ import annotations

import enum
import logging
import sys
import types
from typing import Any

log = logging.getLogger("remote_exec.snapshot")

# Modules whose bodies decide something from the device, in import order.
DEVICE_MODULES = (
    "comfy.model_management",
    "comfy.ops",
    "comfy.ldm.modules.attention",
    "comfy.ldm.modules.diffusionmodules.model",
)
# Third-party modules whose `_register()` asked torch.cuda.is_available() at import.
BACKEND_REGISTRATIONS = ("comfy_kitchen.backends.cuda", "comfy_kitchen.backends.triton")

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_MISSING: Any = object()
_FOREIGN_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)


def _is_value(value: Any) -> bool:
    """A plain result of detection, adopted as it is."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_is_value(item) for item in value)
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, (torch.device, torch.dtype))


def _origin(func: Any) -> tuple[str, int] | None:
    """Where a function (under its `functools.wraps` wrappers) was defined."""
    while hasattr(func, "__wrapped__"):
        func = func.__wrapped__
    code = getattr(func, "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else None


def _rehome(func: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    """`func` reading the live module's globals (a closure keeps its own)."""
    if func.__closure__ is not None:
        return func
    moved = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__)
    moved.__kwdefaults__ = func.__kwdefaults__
    moved.__qualname__ = func.__qualname__
    moved.__doc__ = func.__doc__
    moved.__module__ = func.__module__
    moved.__annotations__ = dict(getattr(func, "__annotations__", {}))
    moved.__dict__.update(func.__dict__)
    return moved


def _definitions(scratch: dict[str, Any], live: dict[str, Any], module: str
                 ) -> dict[int, Any]:
    """Pass 1: the run's functions and classes -> the object the live module keeps."""
    chosen: dict[int, Any] = {}
    # Each function or class is decided under its own name first, then under aliases.
    named = sorted(((name, new) for name, new in scratch.items() if not name.startswith("__")),
                   key=lambda item: getattr(item[1], "__name__", None) != item[0])
    for name, new in named:
        if id(new) in chosen:
            continue
        old = live.get(name)
        if isinstance(new, types.FunctionType) and new.__globals__ is scratch:
            was, now = _origin(old), _origin(new)
            if old is not None and (was is None or was == now or now is None
                                    or was[0] != now[0]):
                chosen[id(new)] = old  # the same def, or a patch from elsewhere: keep it
            else:
                chosen[id(new)] = _rehome(new, live)  # new, or another def of this module
        elif isinstance(new, type) and new.__module__ == module and new is not old:
            chosen[id(new)] = old if isinstance(old, type) else new
    return chosen


def _merge(scratch: dict[str, Any], live: dict[str, Any], module: str
           ) -> dict[str, tuple[Any, Any]]:
    """Merge a re-run into the live namespace; returns {name: (old, new)} of what changed."""
    chosen = _definitions(scratch, live, module)
    changed: dict[str, tuple[Any, Any]] = {}
    for name, new in scratch.items():
        if name.startswith("__") and name.endswith("__"):
            continue
        old = live.get(name, _MISSING)
        if new is old or isinstance(new, types.ModuleType):
            continue
        if id(new) in chosen:
            value = chosen[id(new)]
        elif isinstance(new, enum.Enum) and id(type(new)) in chosen:
            value = chosen[id(type(new))][new.name]
        elif _is_value(new) or old is _MISSING or isinstance(new, _FOREIGN_FUNCTIONS):
            value = new  # a result, a new name, or a function chosen from another module
        elif isinstance(new, dict) and isinstance(old, dict):
            for key, item in new.items():
                if key not in old:
                    old[key] = chosen.get(id(item), item)
            continue
        else:
            continue  # containers, locks, objects: the live ones hold the state
        if value is old or (_is_value(value) and _is_value(old) and value == old
                            and type(value) is type(old)):
            continue
        live[name] = value
        changed[name] = (None if old is _MISSING else old, value)
    return changed


def rerun(module: types.ModuleType) -> dict[str, tuple[Any, Any]]:
    """Execute `module`'s code again and merge what it decides; see the module docstring."""
    spec = module.__spec__
    loader = spec.loader if spec is not None else None
    get_code = getattr(loader, "get_code", None)
    code = get_code(module.__name__) if get_code else None
    if code is None:
        raise RuntimeError(f"cannot re-run {module.__name__}: its code is not available")
    scratch: dict[str, Any] = {
        key: module.__dict__[key] for key in
        ("__name__", "__file__", "__package__", "__spec__", "__loader__", "__path__")
        if key in module.__dict__}
    scratch["__builtins__"] = module.__dict__.get("__builtins__", __builtins__)
    exec(code, scratch)
    return _merge(scratch, module.__dict__, module.__name__)


def rebind(changed: dict[str, tuple[Any, Any]], source: str) -> dict[str, int]:
    """Rebind changed functions in every module that imported them by the same name."""
    counts: dict[str, int] = {}
    moved = {name: pair for name, pair in changed.items()
             if callable(pair[0]) and not isinstance(pair[0], type)}
    if not moved:
        return counts
    for other in list(sys.modules.values()):
        namespace = getattr(other, "__dict__", None)
        if not isinstance(namespace, dict) or namespace.get("__name__") == source:
            continue
        for name, (old, new) in moved.items():
            if namespace.get(name) is old:
                namespace[name] = new
                counts[name] = counts.get(name, 0) + 1
    return counts


def _dynamic_vram(notes: list[str]) -> None:
    """0.26's main.py DynamicVRAM block, for the GPU that arrived after the start."""
    try:
        import comfy.cli_args as cli
    except ImportError:
        return
    enables = getattr(cli, "enables_dynamic_vram", None)
    if enables is None:  # ComfyUI before DynamicVRAM (0.3.x)
        return
    mm = sys.modules["comfy.model_management"]
    args = cli.args
    if not (args.enable_dynamic_vram or (enables() and mm.is_nvidia() and not mm.is_wsl())):
        return
    if not args.enable_dynamic_vram and mm.torch_version_numeric < (2, 8):
        notes.append("DynamicVRAM: torch older than 2.8, not enabled (as main.py decides)")
        return
    try:
        import comfy_aimdo.control as control
    except ImportError:
        notes.append("DynamicVRAM: comfy-aimdo is not installed")
        return
    if control.lib is None:  # main.py loads it before torch, only when it will be used
        notes.append("DynamicVRAM: comfy-aimdo was not loaded at start; not enabled")
        return
    devices = mm.get_all_torch_devices()
    try:
        ready = control.init_devices((d.index, int(args.vram_headroom * 1024 ** 3))
                                     for d in devices)
    except TypeError:  # comfy-aimdo 0.4.9's protocol
        ready = control.init_devices(d.index for d in devices)
    if not ready:
        notes.append("DynamicVRAM: comfy-aimdo could not take the devices; "
                     "the legacy ModelPatcher stays")
        return
    level = {"DEBUG": "set_log_debug", "CRITICAL": "set_log_critical", "ERROR": "set_log_error",
             "WARNING": "set_log_warning"}.get(args.verbose, "set_log_info")
    getattr(control, level)()
    import comfy.memory_management
    import comfy.model_patcher
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    notes.append("DynamicVRAM: enabled")


def _forget_cpu_work(notes: list[str]) -> None:
    """Unload models and clear ComfyUI's execution cache, as its own POST /free does.

    Whatever ran before the restore loaded its models with the CPU as their load
    device, and the cache would hand those to the next prompt; a ComfyUI that
    started on the GPU has none of them. The prompt worker does it when it next
    wakes, which these flags make it do at once."""
    server = sys.modules.get("server")
    queue = getattr(getattr(getattr(server, "PromptServer", None), "instance", None),
                    "prompt_queue", None)
    if queue is None:
        return
    queue.set_flag("unload_models", True)
    queue.set_flag("free_memory", True)
    notes.append("models loaded before the restore unloaded and ComfyUI's cache cleared")


def run() -> dict[str, Any]:
    """Re-run every detection step; returns what changed, for the restore's answer."""
    changed: dict[str, list[str]] = {}
    rebound: dict[str, int] = {}
    notes: list[str] = []
    for name in DEVICE_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        diff = rerun(module)
        changed[name] = sorted(diff)
        for key, count in rebind(diff, name).items():
            rebound[key] = rebound.get(key, 0) + count
    for name in BACKEND_REGISTRATIONS:
        register = getattr(sys.modules.get(name), "_register", None)
        if callable(register):
            register()
            notes.append(f"{name}: registered again")
    mm = sys.modules.get("comfy.model_management")
    set_benchmark = getattr(mm, "set_cudnn_benchmark", None)
    if callable(set_benchmark):
        set_benchmark()
    _dynamic_vram(notes)
    _forget_cpu_work(notes)
    for note in notes:
        log.info("[remote-exec] snapshot restore: %s", note)
    return {"changed": changed, "rebound": rebound, "notes": notes}
