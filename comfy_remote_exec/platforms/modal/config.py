"""The Modal app's settings: names, paths, sizes and limits, from the environment.

`deploy/modal/app.py` reads them when `modal deploy` imports it (the GPU
list, container counts, timeouts become the deployment's) and again in each
container, where the same environment variables are set on the image, so
both sides agree on every name. Nothing here imports `modal`; `Settings` is
plain data the tests build directly.

Deploy-time variables (export them before `modal deploy`):

- `REMOTE_EXEC_MODAL_APP`   the app's name (default `comfy-remote-exec`); the
                            Dict, Queue, Volumes and the web label derive from it
- `GPU_CONFIG`              GPU types in order of preference, e.g. `l40s,a100,a10g`
                            (Modal takes the first one it can get)
- `MAX_GPU_CONTAINERS`      GPU containers at most (default 4)
- `JOBS_PER_CONTAINER`      jobs one GPU container holds at once (default 1)
- `GPU_SCALEDOWN_WINDOW`    seconds an idle GPU container stays warm (default 120)
- `JOB_TIMEOUT`             seconds one job may run on the GPU (default 3600)
- `MEMORY_SNAPSHOT`         `0` turns memory snapshots off (default on)
- `REMOTE_EXEC_STACK`       the stack file (default deploy/stack.yaml)
- `REMOTE_EXEC_TOKEN_SECRET`, `HF_SECRET`   the Modal Secrets' names
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

DEFAULT_APP = "comfy-remote-exec"
DEFAULT_GPUS = ("l40s", "a100", "a10g")

# Paths inside the containers.
COMFYUI_DIR = PurePosixPath("/comfyui")  # ComfyUI and the stack's custom nodes (the image)
COMFY_BASE = PurePosixPath("/comfyui-base")  # the GPU ComfyUI's --base-directory (local disk)
MODELS_MOUNT = PurePosixPath("/models-volume")  # the models volume: models/<folder>/<name>
DATA_MOUNT = PurePosixPath("/data")  # the data volume: blobs/ and jobs/ (storage.py)
STACK_IN_IMAGE = PurePosixPath("/comfy-remote-exec/stack.yaml")  # the deploy's stack file
API_PORT = 8000


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def gpu_list(raw: str | None) -> list[str]:
    """`GPU_CONFIG` as Modal's fallback list: `l40s, A100-80GB` -> ["l40s", "a100-80gb"]."""
    gpus = [g.strip().lower() for g in (raw or "").split(",") if g.strip()]
    return gpus or list(DEFAULT_GPUS)


@dataclass(frozen=True)
class Settings:
    app_name: str = DEFAULT_APP
    gpus: list[str] = field(default_factory=lambda: list(DEFAULT_GPUS))
    max_gpu_containers: int = 4
    jobs_per_container: int = 1
    gpu_scaledown_window: int = 120
    job_timeout: int = 3600
    memory_snapshot: bool = True
    stack_file: str = "deploy/stack.yaml"
    token_secret: str = "comfy-remote-exec-token"
    hf_secret: str = "huggingface"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            app_name=env.get("REMOTE_EXEC_MODAL_APP", "").strip() or DEFAULT_APP,
            gpus=gpu_list(env.get("GPU_CONFIG")),
            max_gpu_containers=_int(env, "MAX_GPU_CONTAINERS", 4),
            jobs_per_container=_int(env, "JOBS_PER_CONTAINER", 1),
            gpu_scaledown_window=_int(env, "GPU_SCALEDOWN_WINDOW", 120, minimum=2),
            job_timeout=_int(env, "JOB_TIMEOUT", 3600, minimum=10),
            memory_snapshot=env.get("MEMORY_SNAPSHOT", "1").strip() not in ("0", "false", "no"),
            stack_file=env.get("REMOTE_EXEC_STACK", "").strip() or "deploy/stack.yaml",
            token_secret=env.get("REMOTE_EXEC_TOKEN_SECRET", "").strip()
            or "comfy-remote-exec-token",
            hf_secret=env.get("HF_SECRET", "").strip() or "huggingface",
        )

    # The names of the app's Modal objects, all derived from the app's name.
    @property
    def jobs_dict(self) -> str:
        return f"{self.app_name}-jobs"

    @property
    def events_queue(self) -> str:
        return f"{self.app_name}-events"

    @property
    def models_volume(self) -> str:
        return f"{self.app_name}-models"

    @property
    def data_volume(self) -> str:
        return f"{self.app_name}-data"

    @property
    def web_label(self) -> str:
        """The API's URL is `https://<workspace>--<web_label>.modal.run`."""
        return f"{self.app_name}-api"

    def env(self) -> dict[str, str]:
        """What the image carries, so every container reads the deploy's settings."""
        return {
            "REMOTE_EXEC_MODAL_APP": self.app_name,
            "GPU_CONFIG": ",".join(self.gpus),
            "MAX_GPU_CONTAINERS": str(self.max_gpu_containers),
            "JOBS_PER_CONTAINER": str(self.jobs_per_container),
            "GPU_SCALEDOWN_WINDOW": str(self.gpu_scaledown_window),
            "JOB_TIMEOUT": str(self.job_timeout),
            "MEMORY_SNAPSHOT": "1" if self.memory_snapshot else "0",
            "COMFYUI_PATH": str(COMFYUI_DIR),
        }
