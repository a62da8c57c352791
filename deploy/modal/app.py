"""The Modal app: `modal deploy deploy/modal/app.py` (README, "Modal").

Only what must touch `modal` is here; the code it runs is
`comfy_remote_exec/platforms/modal/` (settings in `config`, read from the
environment at deploy time and again in each container).

- `ComfyGPU`: the GPU class. Its ComfyUI starts CPU-only before the memory
  snapshot (`@modal.enter(snap=True)`) and takes the GPU after the restore
  (`@modal.enter(snap=False)`); `run` is one job on the worker's runner. GPU
  types in order of preference from `GPU_CONFIG`; `MAX_GPU_CONTAINERS`
  containers of `JOBS_PER_CONTAINER` jobs each.
- `API`: the job API (the worker's aiohttp app over Modal's parts) on one
  small CPU container, at `https://<workspace>--<app>-api.modal.run`.
- `fail_stale_jobs` (every minute) and `clean_up` (daily at 03:00 UTC).
- `download_models` fills the models volume from the stack file, and
  `verify_setup` says what the deployment has and lacks:
  `modal run deploy/modal/app.py::download_models`, `...::verify_setup`.

Secrets: the bearer token (`REMOTE_EXEC_TOKEN` in the secret named by
`REMOTE_EXEC_TOKEN_SECRET`, default `comfy-remote-exec-token`) and the Hugging
Face token (`HUGGINGFACE_ACCESS_TOKEN` in `HF_SECRET`, default `huggingface`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import modal

if modal.is_local():  # deploying from a checkout: import the package from it
    REPO = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(REPO))

from comfy_remote_exec.platforms.modal import image as build
from comfy_remote_exec.platforms.modal import snapshot
from comfy_remote_exec.platforms.modal.config import (
    API_PORT,
    COMFY_BASE,
    COMFYUI_DIR,
    DATA_MOUNT,
    MODELS_MOUNT,
    STACK_IN_IMAGE,
    Settings,
)
from comfy_remote_exec.stack.spec import load_stack

# Deploying: the checkout's stack file and this package's dependencies (read from
# pyproject.toml, the image's last install step); in a container: the stack file the
# image carries, the dependencies installed already.
if modal.is_local():
    STACK_FILE = REPO / os.environ.get("REMOTE_EXEC_STACK", "deploy/stack.yaml")
    PACKAGES = build.package_requirements(REPO / "pyproject.toml")
else:
    STACK_FILE, PACKAGES = Path(STACK_IN_IMAGE), []
settings = Settings.from_env()
stack = load_stack(STACK_FILE)
SNAPSHOT = settings.memory_snapshot and snapshot.AVAILABLE

image = (
    modal.Image.debian_slim(python_version=build.PYTHON_VERSION)
    .apt_install(*build.APT_PACKAGES)
    .uv_pip_install("uv", *PACKAGES)
    .run_commands(*build.comfyui_commands(stack))
    .run_commands(*build.custom_node_commands(stack))
    .run_commands(build.write_model_paths_command())
    .env(settings.env())
    .add_local_file(STACK_FILE, str(STACK_IN_IMAGE))
    .add_local_python_source("comfy_remote_exec")
)

app = modal.App(settings.app_name, image=image)
jobs = modal.Dict.from_name(settings.jobs_dict, create_if_missing=True)
events = modal.Queue.from_name(settings.events_queue, create_if_missing=True)
models = modal.Volume.from_name(settings.models_volume, create_if_missing=True)
data = modal.Volume.from_name(settings.data_volume, create_if_missing=True)
token_secret = modal.Secret.from_name(settings.token_secret, required_keys=["REMOTE_EXEC_TOKEN"])
hf_secret = modal.Secret.from_name(settings.hf_secret,
                                   required_keys=["HUGGINGFACE_ACCESS_TOKEN"])


@app.cls(gpu=settings.gpus, volumes={str(MODELS_MOUNT): models, str(DATA_MOUNT): data},
         enable_memory_snapshot=SNAPSHOT, max_containers=settings.max_gpu_containers,
         scaledown_window=settings.gpu_scaledown_window, timeout=settings.job_timeout,
         retries=modal.Retries(max_retries=1, initial_delay=1.0, backoff_coefficient=1.0))
@modal.concurrent(max_inputs=settings.jobs_per_container)
class ComfyGPU:
    @modal.enter(snap=SNAPSHOT)
    async def start_comfyui(self) -> None:
        """Before the snapshot (no GPU): ComfyUI starts CPU-only, CUDA untouched. Without
        snapshots, this only builds the worker, and `take_gpu` starts ComfyUI."""
        from comfy_remote_exec.discovery import ComfyInstall
        from comfy_remote_exec.platforms.modal.gpu import GpuConfig, GpuWorker
        from comfy_remote_exec.platforms.modal.storage import VolumeStorage

        install = ComfyInstall(root=Path(COMFYUI_DIR), python=Path(sys.executable))
        config = GpuConfig(install=install, base_dir=Path(COMFY_BASE),
                           state_dir=Path("/tmp/remote_exec"),
                           model_paths=Path(build.MODEL_PATHS), snapshot=SNAPSHOT)
        self.worker = GpuWorker(config, VolumeStorage(data, Path(DATA_MOUNT)), events, jobs,
                                on_unhealthy=modal.experimental.stop_fetching_inputs.aio)
        if SNAPSHOT:
            await self.worker.prepare()

    @modal.enter(snap=False)
    async def take_gpu(self) -> None:
        """After the restore: ComfyUI detects the GPU; the runner connects."""
        await self.worker.resume()

    @modal.method()
    async def run(self, request: dict) -> dict:
        return await self.worker.run(request)

    @modal.method()
    async def describe(self) -> dict:
        return await self.worker.describe()

    @modal.exit()
    async def stop(self) -> None:
        await self.worker.stop()


async def spawn_job(request: dict) -> modal.FunctionCall:
    return await ComfyGPU().run.spawn.aio(request)


async def describe_comfyui() -> dict:
    return await ComfyGPU().describe.remote.aio()


@app.cls(volumes={str(DATA_MOUNT): data}, secrets=[token_secret], max_containers=1,
         scaledown_window=600, timeout=3600)
@modal.concurrent(max_inputs=1000)
class API:
    """One container: it holds the jobs' relays and event logs in memory."""

    @modal.enter()
    def open(self) -> None:
        from comfy_remote_exec.platforms.modal.api import ApiThread, ModalParts, open_api
        from comfy_remote_exec.platforms.modal.executor import GpuFunctions

        parts = ModalParts(jobs, events, data, Path(DATA_MOUNT),
                           GpuFunctions(spawn=spawn_job, call_from_id=modal.FunctionCall.from_id,
                                        describe=describe_comfyui))
        self.server = ApiThread(lambda: open_api(parts, token=os.environ["REMOTE_EXEC_TOKEN"]),
                                port=API_PORT)
        self.server.start()

    @modal.web_server(API_PORT, startup_timeout=120, label=settings.web_label)
    def serve(self) -> None:
        """The API listens since `open`."""

    @modal.exit()
    def close(self) -> None:
        self.server.stop()


@app.function(volumes={str(DATA_MOUNT): data}, schedule=modal.Cron("* * * * *"), timeout=120)
async def fail_stale_jobs() -> dict:
    """Every minute: jobs no GPU took, or that run too long, fail with the reason."""
    from comfy_remote_exec.platforms.modal import maintenance

    rules = maintenance.StaleRules(run_timeout=settings.job_timeout + 300.0)
    report = await maintenance.fail_stale_jobs(jobs, events, modal.FunctionCall.from_id,
                                               rules=rules)
    if report.unfinished or report.failed:  # the API relays their ends and sends webhooks
        await maintenance.wake(await API().serve.get_web_url.aio())
    return {"failed": [vars(s) for s in report.failed], "unfinished": report.unfinished}


@app.function(volumes={str(DATA_MOUNT): data}, schedule=modal.Cron("0 3 * * *"), timeout=1800)
async def clean_up() -> dict:
    """Daily at 03:00 UTC: finished jobs and their files, after REMOTE_EXEC_KEEP_DAYS."""
    from comfy_remote_exec.platforms.modal import maintenance

    days = float(os.environ.get("REMOTE_EXEC_KEEP_DAYS", "7"))
    report = await maintenance.clean_up(jobs, events, data, Path(DATA_MOUNT),
                                        keep=days * maintenance.DAY)
    return vars(report)


@app.function(volumes={str(MODELS_MOUNT): models}, secrets=[hf_secret], timeout=6 * 3600)
def download_models(only: str = "", parallel: int = 4) -> None:
    """Fill the models volume from the stack (resumable: run it again after a cut)."""
    from comfy_remote_exec.platforms.modal.setup import fill_models

    names = [n.strip() for n in only.split(",") if n.strip()] or None
    fill_models(stack, Path(MODELS_MOUNT), models.commit, parallel=parallel, only=names)


@app.function(volumes={str(MODELS_MOUNT): models}, timeout=300)
def verify_setup() -> str:
    """List the models per folder and the custom nodes; say what the stack lacks here."""
    from comfy_remote_exec.platforms.modal.setup import verify

    report = verify(stack, Path(MODELS_MOUNT), Path(COMFYUI_DIR))
    print(report.text())
    if not report.ok:
        raise RuntimeError("the deployment lacks what the stack lists (see above)")
    return report.text()
