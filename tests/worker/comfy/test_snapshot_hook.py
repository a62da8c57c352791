"""The snapshot hook's parts on their own: the merge that re-runs a module's detection,
the CUDA guard (on a stand-in torch), and its list of modules checked against the
source of each ComfyUI under test. The hook on a running ComfyUI:
tests/platforms/modal/test_snapshot.py."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_remote_exec.comfy_env import SNAPSHOT_ENV
from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.worker.comfy.comfyui_nodes.remote_exec_worker import (
    prestartup_script,
    snapshot,
)
from comfy_remote_exec.worker.comfy.comfyui_nodes.remote_exec_worker.snapshot import redetect

DETECT = '''
import enum
import threading
import snapcfg

chosen = None  # bound before the functions it will name

class State(enum.Enum):
    CPU = 0
    GPU = 1

state = State.GPU if snapcfg.GPU else State.CPU
total = 24576 if snapcfg.GPU else 0
loaded = []
lock = threading.Lock()

def basic():
    return "basic"

def fast():
    return "fast"

registry = {"basic": basic}
if snapcfg.GPU:
    registry["fast"] = fast

def helper():
    return total

if snapcfg.GPU:
    def kernel():
        return f"gpu kernel {total}"
else:
    def kernel():
        return "cpu kernel"

chosen = fast if snapcfg.GPU else basic
picker = max if snapcfg.GPU else min
'''


@pytest.fixture
def detect_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    (tmp_path / "snapcfg.py").write_text("GPU = False\n")
    (tmp_path / "snapdetect.py").write_text(DETECT)
    (tmp_path / "snapuser.py").write_text("from snapdetect import State, chosen, kernel\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import snapcfg  # type: ignore[import-not-found]
    import snapdetect  # type: ignore[import-not-found]
    import snapuser  # type: ignore[import-not-found]
    yield {"cfg": snapcfg, "detect": snapdetect, "user": snapuser}
    for name in ("snapcfg", "snapdetect", "snapuser"):
        sys.modules.pop(name, None)


def test_a_rerun_adopts_the_new_decisions_and_keeps_live_objects(
        detect_modules: dict[str, Any]) -> None:
    cfg, mod, user = detect_modules["cfg"], detect_modules["detect"], detect_modules["user"]
    before = {name: getattr(mod, name) for name in
              ("State", "loaded", "lock", "registry", "basic", "fast")}
    mod.loaded.append("a model")

    def patched_helper() -> str:  # a custom node's patch: kept through the re-run
        return "patched"

    mod.helper = patched_helper
    assert (mod.state, mod.kernel(), mod.chosen) == (mod.State.CPU, "cpu kernel", mod.basic)

    cfg.GPU = True
    changed = redetect.rerun(mod)
    rebound = redetect.rebind(changed, "snapdetect")

    assert sorted(changed) == ["chosen", "kernel", "picker", "state", "total"]
    assert mod.picker is max  # a function from elsewhere is a result too
    assert mod.state is before["State"].GPU  # the live enum's member
    assert mod.total == 24576
    for name, value in before.items():
        assert getattr(mod, name) is value, name  # definitions and state keep their identity
    assert mod.loaded == ["a model"]
    assert mod.registry == {"basic": mod.basic, "fast": mod.fast}  # gained the key it lacked
    assert mod.chosen is mod.fast  # an alias maps to the live function
    assert mod.kernel() == "gpu kernel 24576"  # the other `def`, reading live globals
    assert mod.kernel.__globals__ is vars(mod)
    assert mod.helper is patched_helper
    assert rebound == {"chosen": 1, "kernel": 1}
    assert user.chosen is mod.fast and user.kernel is mod.kernel and user.State is mod.State


FAKE_TORCH = {
    "torch/__init__.py": "from . import cuda\n",
    "torch/cuda/__init__.py": '''
        import functools
        CALLS = []
        def is_available():
            CALLS.append("is_available")
            return True
        def device_count():
            CALLS.append("device_count")
            return 1
        def _lazy_init():
            CALLS.append("_lazy_init")
        def current_device():
            _lazy_init()
            return 0
        def _logged(func):  # a wrapper installed before the guard (as the tests' recorder is)
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return func(*args, **kwargs)
            return wrapper
        from . import memory
        is_available = _logged(is_available)
        ''',
    "torch/cuda/memory.py": '''
        from . import _lazy_init
        def mem_get_info():
            _lazy_init()
            return (1, 2)
        ''',
}

GUARD_RUN = '''
import json, sys
from comfy_remote_exec.worker.comfy.comfyui_nodes.remote_exec_worker.snapshot import cuda_guard
cuda_guard.install()
assert "torch" not in sys.modules
import torch
out = {"available": torch.cuda.is_available(), "count": torch.cuda.device_count(),
       "refused": []}
for ask in (torch.cuda.current_device, torch.cuda.memory.mem_get_info):
    try:
        ask()
    except cuda_guard.CudaHeldBack:
        out["refused"].append(ask.__name__)
out["reached_torch"] = list(torch.cuda.CALLS)
out["held"] = dict(cuda_guard.HELD)
out["released"] = cuda_guard.release()
out["after"] = [torch.cuda.is_available(), torch.cuda.device_count(),
                torch.cuda.current_device(), list(torch.cuda.memory.mem_get_info())]
out["reached_after"] = list(torch.cuda.CALLS)
print(json.dumps(out))
'''


def test_the_guard_holds_cuda_back_from_torchs_import_until_released(tmp_path: Path) -> None:
    for name, text in FAKE_TORCH.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    done = subprocess.run([sys.executable, "-c", GUARD_RUN], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path)}, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["available"], out["count"]) == (False, 0)
    assert out["refused"] == ["current_device", "mem_get_info"]
    assert out["reached_torch"] == []  # nothing reached the (stand-in) driver
    assert out["held"] == {"is_available": 1, "device_count": 1, "_lazy_init": 2}
    assert out["released"] == ["torch.cuda._lazy_init", "torch.cuda.device_count",
                               "torch.cuda.is_available", "torch.cuda.memory._lazy_init"]
    assert out["after"] == [True, 1, 0, [1, 2]]
    assert out["reached_after"] == ["is_available", "device_count", "_lazy_init", "_lazy_init"]


def test_the_hook_keeps_the_environment_variables_name() -> None:
    assert snapshot.ENV == prestartup_script.ENV == SNAPSHOT_ENV
    assert snapshot.MODULE == prestartup_script.MODULE


def test_restore_without_snapshot_mode_refuses() -> None:
    assert snapshot.STATE.phase == "off"
    with pytest.raises(RuntimeError, match="nothing to restore"):
        snapshot.restore()


# --- the list of modules re-run, against each ComfyUI's source ------------------------

SCANNED = ("comfy", "comfy_extras", "comfy_execution", "comfy_api", "comfy_api_nodes", "app",
           "utils", "api_server", "middleware")
# main.py's DynamicVRAM block (0.26), replayed by redetect._dynamic_vram.
MAIN_REPLAYED = {"is_nvidia", "is_wsl", "torch_version_numeric", "get_all_torch_devices"}


class ImportTimeDeviceCode(ast.NodeVisitor):
    """What a module's body (not its functions) asks of the device when it is imported."""

    def __init__(self, tree: ast.Module) -> None:
        self.aliases = {"model_management"}
        self.imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self.aliases.update(a.asname for a in node.names
                                    if a.name == "comfy.model_management" and a.asname)
            elif isinstance(node, ast.ImportFrom) and node.module == "comfy":
                self.aliases.update(a.asname or a.name for a in node.names
                                    if a.name == "model_management")
            elif isinstance(node, ast.ImportFrom) and node.module == "comfy.model_management":
                self.imported.update(a.asname or a.name for a in node.names)
        self.found: set[str] = set()
        self.visit(tree)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        return

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.imported:
            self.found.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = ast.unparse(node)
        for prefix in ("comfy.model_management.", *(f"{a}." for a in self.aliases)):
            if dotted.startswith(prefix):
                self.found.add(dotted[len(prefix):].split(".")[0])
                return
        if dotted.startswith(("torch.cuda.", "torch.backends.cudnn.")):
            self.found.add(dotted)
            return
        self.generic_visit(node)


def import_time_device_code(root: Path) -> dict[str, set[str]]:
    paths = [p for p in root.glob("*.py")]
    for folder in SCANNED:
        paths += (root / folder).rglob("*.py")
    found = {}
    for path in paths:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        asks = ImportTimeDeviceCode(tree).found
        if asks:
            found[".".join(parts)] = asks
    return found


@pytest.mark.comfyui
def test_every_module_deciding_from_the_device_at_import_is_re_run(
        comfy_install: ComfyInstall) -> None:
    found = import_time_device_code(comfy_install.root)
    assert "comfy.model_management" in found and "comfy.ldm.modules.attention" in found
    main = found.pop("main", set())
    assert main <= MAIN_REPLAYED, f"main.py decides more at start than the restore replays: {main}"
    missing = {name: sorted(asks) for name, asks in found.items()
               if name not in redetect.DEVICE_MODULES}
    assert missing == {}, ("these modules decide something from the device at import; "
                           "add them to redetect.DEVICE_MODULES")
