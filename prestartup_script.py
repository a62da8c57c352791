"""ComfyUI's prestartup hook for comfy-remote-exec (run before ComfyUI imports torch).

Thin on purpose: it reads three plain values from ComfyUI (the user directory,
the install, the parsed arguments) and hands them to
`comfy_remote_exec.extension.prestart`, which starts a `local` worker now when
remote mode is on, so it is ready about when ComfyUI is.
"""

import logging
import os
import sys
from pathlib import Path

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

try:
    import folder_paths
    from comfy.cli_args import args

    from comfy_remote_exec.extension.prestart import prestart

    prestart(user_dir=Path(folder_paths.get_user_directory()),
             comfyui_root=Path(folder_paths.__file__).resolve().parent, args=args)
except Exception as exc:  # ComfyUI starts whatever happens here
    logging.getLogger("comfy_remote_exec").warning("comfy-remote-exec prestartup: %s", exc)
