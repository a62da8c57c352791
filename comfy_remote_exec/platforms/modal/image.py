"""The Modal image's build steps, from the stack file: plain shell commands.

The app file turns them into a `modal.Image` (`run_commands`); here they are
strings, so a test reads what the image installs without `modal`, and the
image's layers depend on the stack alone (this package is added last, at
container start, so a code change rebuilds nothing). As the RunPod
Dockerfile does, with uv:

1. ComfyUI at the stack's ref, its requirements, and CUDA torch;
2. the stack's custom nodes at their pinned commits (`stack.spec.node_commands`,
   the same commands `python -m comfy_remote_exec.stack install-nodes` runs),
   each node's requirements installed under a constraint that keeps torch;
3. the Python packages this package needs (`package_requirements`).

Models are not baked in: they live on the models volume, reached through
`model_paths_yaml()`, written where the GPU class passes it to ComfyUI.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

from ...stack.spec import Command, Stack, node_commands
from .config import COMFYUI_DIR, MODELS_MOUNT

PYTHON_VERSION = "3.12"
APT_PACKAGES = ("git", "ca-certificates", "libgl1", "libglib2.0-0", "ffmpeg")
TORCH_INDEX = "https://download.pytorch.org/whl/cu124"
TORCH_PACKAGES = ("torch==2.6.0", "torchvision==0.21.0", "torchaudio==2.6.0")
CONSTRAINTS = "/torch-constraints.txt"
INSTALLER = ("uv", "pip", "install", "--system", "--constraint", CONSTRAINTS)
MODEL_PATHS = PurePosixPath("/etc/comfy-remote-exec/extra_model_paths.yaml")
# The model folders ComfyUI knows, as deploy/runpod/extra_model_paths.yaml lists them.
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",), "configs": ("configs",), "loras": ("loras",),
    "vae": ("vae",), "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("diffusion_models", "unet"), "clip_vision": ("clip_vision",),
    "style_models": ("style_models",), "embeddings": ("embeddings",),
    "controlnet": ("controlnet", "t2i_adapter"), "upscale_models": ("upscale_models",),
    "vae_approx": ("vae_approx",), "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",), "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",),
}


def comfyui_commands(stack: Stack, dest: PurePosixPath = COMFYUI_DIR) -> list[str]:
    """ComfyUI at the stack's ref (a tag, branch or commit), with its requirements and
    CUDA torch; then the constraint file that keeps that torch."""
    repo, ref, where = (shlex.quote(stack.comfyui.repo), shlex.quote(stack.comfyui.ref),
                        shlex.quote(str(dest)))
    return [
        f"git clone --filter=blob:none --no-checkout {repo} {where} && "
        f"git -C {where} checkout --quiet --detach {ref}",
        f"uv pip install --system --index-url {TORCH_INDEX} {' '.join(TORCH_PACKAGES)}",
        f"uv pip install --system -r {where}/requirements.txt",
        "uv pip freeze --system | grep -E '^(torch|torchvision|torchaudio)==' "
        f"| sed 's/+.*//' > {CONSTRAINTS}",
    ]


def shell(command: Command) -> str:
    """A stack install step as one shell line, its condition included."""
    line = str(command)
    if command.only_if is not None:
        return f"if [ -e {shlex.quote(str(command.only_if))} ]; then {line}; fi"
    if command.unless is not None:
        return f"[ -e {shlex.quote(str(command.unless))} ] || {line}"
    return line


def custom_node_commands(stack: Stack, comfyui: PurePosixPath = COMFYUI_DIR) -> list[str]:
    return [shell(c) for c in node_commands(stack, str(comfyui), installer=INSTALLER)]


def package_requirements(pyproject: Path) -> list[str]:
    """This package's dependencies (`[project] dependencies` of pyproject.toml), but the
    RunPod SDK, which a Modal container does not use."""
    text = pyproject.read_text(encoding="utf-8")
    block = re.search(r"(?ms)^\[project\].*?^dependencies\s*=\s*\[(.*?)\]", text)
    if block is None:
        raise ValueError(f"{pyproject} has no [project] dependencies")
    deps = re.findall(r'"([^"]+)"', block.group(1))
    return [d for d in deps if not re.match(r"runpod\b", d)]


def model_paths_yaml(root: PurePosixPath = MODELS_MOUNT) -> str:
    """ComfyUI's extra_model_paths.yaml for the models volume (`root/models/<folder>`)."""
    lines = ["# The models volume, filled by the app's download_models function.",
             "remote_exec_models_volume:", f"  base_path: {root}/models", "  is_default: true"]
    for kind, folders in MODEL_FOLDERS.items():
        if len(folders) == 1:
            lines.append(f"  {kind}: {folders[0]}")
        else:
            lines.append(f"  {kind}: |")
            lines += [f"    {folder}" for folder in folders]
    return "\n".join(lines) + "\n"


def write_model_paths_command(path: PurePosixPath = MODEL_PATHS) -> str:
    """The build step that writes `model_paths_yaml()` into the image."""
    where = shlex.quote(str(path))
    return (f"mkdir -p {shlex.quote(str(path.parent))} && "
            f"printf '%s' {shlex.quote(model_paths_yaml())} > {where}")
