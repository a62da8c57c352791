"""The Modal app file imports with the real `modal` package, and registers what the
deployment needs: read back from the real modal objects (their private `_spec`,
`_function_info`, and the settings their loaders hold), nothing from Modal's cloud."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import modal
import pytest
from modal._partial_function import _PartialFunctionFlags
from modal._utils.async_utils import synchronizer

from comfy_remote_exec.platforms.modal import snapshot

APP_FILE = Path(__file__).resolve().parents[3] / "deploy" / "modal" / "app.py"


def load_app(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
             snapshots: bool = True) -> ModuleType:
    for key in ("GPU_CONFIG", "MAX_GPU_CONTAINERS", "JOBS_PER_CONTAINER", "MEMORY_SNAPSHOT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # As deployed once the snapshot hook is in (the stand-in module says it is not).
    monkeypatch.setattr(snapshot, "AVAILABLE", snapshots)
    spec = importlib.util.spec_from_file_location("modal_app_under_test", APP_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "modal_app_under_test", module)
    spec.loader.exec_module(module)
    return module


def registered(module: ModuleType) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    state = synchronizer._translate_in(module.app)._local_state
    return state.functions, state.classes, list(state.web_endpoints)


def options(function: Any) -> dict[str, Any]:
    """The settings a function's loader builds its definition from (enable_memory_snapshot,
    max_containers, scaledown_window...)."""
    loader = function._load
    return dict(zip(loader.__code__.co_freevars,
                    (cell.cell_contents for cell in loader.__closure__ or ()), strict=True))


def flags(cls: Any, method: str) -> int:
    user_cls = synchronizer._translate_in(cls)._user_cls
    return int(synchronizer._translate_in(user_cls.__dict__[method]).flags)


def test_gpu_class(monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_app(monkeypatch, {"GPU_CONFIG": "l40s,a100,a10g", "MAX_GPU_CONTAINERS": "4"})
    functions, classes, _ = registered(app)
    gpu = functions["ComfyGPU.*"]
    assert gpu._spec.gpus == ["l40s", "a100", "a10g"], "the fallback list, in order"
    assert [g for g, _ in gpu._function_info.gpus] == ["L40S", "A100", "A10G"]
    opts = options(gpu)
    assert opts["enable_memory_snapshot"] is True
    assert opts["max_containers"] == 4 and opts["max_concurrent_inputs"] == 1
    assert opts["scaledown_window"] == 120 and gpu._function_info.timeout == 3600
    assert set(gpu._function_info.volumes) == {"/models-volume", "/data"}
    assert gpu._function_info.method_names == ["run", "describe"]
    enter_pre = _PartialFunctionFlags.ENTER_PRE_SNAPSHOT
    enter_post = _PartialFunctionFlags.ENTER_POST_SNAPSHOT
    assert flags(classes["ComfyGPU"], "start_comfyui") & enter_pre
    assert flags(classes["ComfyGPU"], "take_gpu") & enter_post


def test_gpu_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_app(monkeypatch, {"GPU_CONFIG": "h100", "MAX_GPU_CONTAINERS": "2",
                                 "JOBS_PER_CONTAINER": "3", "MEMORY_SNAPSHOT": "0"})
    functions, classes, _ = registered(app)
    opts = options(functions["ComfyGPU.*"])
    assert functions["ComfyGPU.*"]._spec.gpus == ["h100"]
    assert (opts["max_containers"], opts["max_concurrent_inputs"]) == (2, 3)
    assert opts["enable_memory_snapshot"] is False
    assert flags(classes["ComfyGPU"], "start_comfyui") & _PartialFunctionFlags.ENTER_POST_SNAPSHOT


def test_without_the_snapshot_hook_comfyui_starts_after_the_restore(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_app(monkeypatch, {}, snapshots=False)
    functions, _, _ = registered(app)
    assert options(functions["ComfyGPU.*"])["enable_memory_snapshot"] is False


def test_api_schedules_volumes_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_app(monkeypatch, {})
    functions, _, web = registered(app)
    assert web == ["API.serve"]
    api = functions["API.*"]
    assert api._spec.gpus is None, "the API is a CPU function"
    assert options(api)["max_containers"] == 1, "one container holds the jobs' relays"
    assert api._function_info.concurrency_info.max_inputs >= 100
    assert api._function_info.secrets == ["modal.Secret.from_name('comfy-remote-exec-token')"]
    assert api._function_info.volumes["/data"].name == "comfy-remote-exec-data"
    webhook = options(api)["method_definitions"]["serve"].webhook_config
    assert webhook.web_server_port == 8000 and webhook.requested_suffix == "comfy-remote-exec-api"

    assert functions["fail_stale_jobs"]._function_info.schedule == "Cron('* * * * *', UTC)"
    assert functions["clean_up"]._function_info.schedule == "Cron('0 3 * * *', UTC)"
    assert "/data" in functions["clean_up"]._function_info.volumes

    download = functions["download_models"]._function_info
    assert download.secrets == ["modal.Secret.from_name('huggingface')"]
    assert download.volumes["/models-volume"].name == "comfy-remote-exec-models"
    assert "/models-volume" in functions["verify_setup"]._function_info.volumes
    assert isinstance(app.jobs, modal.Dict) and isinstance(app.events, modal.Queue)


def test_the_client_finds_the_web_method_the_app_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--backend modal` without `--url` looks up `DEFAULT_APP`/`DEFAULT_FUNCTION`
    (`modal_url`): they must name the deployed app and its web method."""
    from comfy_remote_exec import modal_url

    app = load_app(monkeypatch, {})
    assert app.app.name == modal_url.DEFAULT_APP
    assert modal_url.DEFAULT_FUNCTION in registered(app)[2]
