"""Model folder and file names, as both sides check them.

A model shipped from the local machine lands in the remote's model folder
under the name the workflow uses, so the name comes from the other side and is
checked on both: the extension refuses before uploading, the worker refuses
before placing. Folders are ComfyUI's model folder names; a name is a clean
relative path (`safe_relpath`) with no hidden parts and no backslashes, so it
cannot leave the folder or hide in it.
"""

from __future__ import annotations

from ..errors import BadRequest
from .common import safe_relpath

# ComfyUI's model folders (folder_paths' names under models/), old aliases included.
MODEL_FOLDERS = frozenset({
    "checkpoints", "configs", "loras", "vae", "text_encoders", "clip", "diffusion_models",
    "unet", "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx",
    "controlnet", "t2i_adapter", "gligen", "upscale_models", "latent_upscale_models",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
})


# The model folder behind the common loader fields and classes, where a COMBO's options
# alone cannot tell (two empty folders look the same). Both sides read them: the
# worker to describe a missing model, the extension's preflight to ship one.
FIELD_FOLDERS = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae",
    "clip_name": "text_encoders", "clip_name1": "text_encoders",
    "clip_name2": "text_encoders", "clip_name3": "text_encoders",
    "unet_name": "diffusion_models", "control_net_name": "controlnet",
    "style_model_name": "style_models", "upscale_model": "upscale_models",
    "gligen_name": "gligen", "hypernetwork_name": "hypernetworks",
}
CLASS_FOLDERS = {"UpscaleModelLoader": "upscale_models", "CLIPVisionLoader": "clip_vision",
                 "PhotoMakerLoader": "photomaker"}


def check_model_folder(folder: object, known: frozenset[str] = MODEL_FOLDERS) -> str:
    """`folder` if it is a model folder in `known`, else `BadRequest` (`unknown_folder`)."""
    if not isinstance(folder, str) or folder not in known:
        raise BadRequest(f"{folder!r} is not a model folder; known folders: "
                         f"{', '.join(sorted(known))}", code="unknown_folder",
                         details={"folder": str(folder)})
    return folder


def check_model_name(name: object) -> str:
    """`name` as a clean relative POSIX path inside a model folder, or `BadRequest`
    (`unsafe_name`): no absolute path, `..`, NUL, backslash or hidden part."""
    if isinstance(name, str) and "\\" in name:
        raise BadRequest(f"model name {name!r} contains a backslash; use '/'",
                         code="unsafe_name")
    clean = safe_relpath(name, what="model name")
    if any(part.startswith(".") for part in clean.split("/")):
        raise BadRequest(f"model name {name!r} has a hidden part", code="unsafe_name")
    return clean
