"""Find a ComfyUI install and its Python.

One function serves the launcher and the tests, so both find the same ComfyUI
the same way. Standard library only: the launcher calls this before the
package's dependencies are installed anywhere.

Order: an explicit `--comfyui DIR`, then `COMFYUI_PATH`, then comfy-cli's
default workspace `~/comfy/ComfyUI`, then `~/ComfyUI`. The Python is an
explicit `--python`, else `.venv/` or `venv/` inside the install.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import RemoteExecError

HOW_TO_GET_COMFYUI = """\
No ComfyUI install was found. Looked in:
{looked}
To get one:
  * with comfy-cli:  pip install comfy-cli && comfy --workspace ~/comfy/ComfyUI install
  * or by hand:      git clone https://github.com/comfyanonymous/ComfyUI ~/comfy/ComfyUI
                     cd ~/comfy/ComfyUI && python -m venv .venv
                     .venv/bin/pip install -r requirements.txt
Then point at it with --comfyui DIR or COMFYUI_PATH=DIR if it lives elsewhere."""


class ComfyUINotFound(RemoteExecError):
    code = "comfyui_not_found"
    status = 500


@dataclass(frozen=True)
class ComfyInstall:
    root: Path
    python: Path

    @property
    def main_py(self) -> Path:
        return self.root / "main.py"


def _is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir()


def _venv_python(root: Path) -> Path | None:
    for venv in (".venv", "venv"):
        for rel in ("bin/python", "bin/python3", "Scripts/python.exe"):
            candidate = root / venv / rel
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def default_workspace(home: Path | None = None) -> Path:
    """comfy-cli's default workspace on Linux; the launcher installs ComfyUI there."""
    return (Path.home() if home is None else home) / "comfy" / "ComfyUI"


def candidates(explicit: str | os.PathLike[str] | None = None,
               env: Mapping[str, str] | None = None,
               home: Path | None = None) -> list[tuple[str, Path]]:
    """The places looked at, in order, each with where it came from."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    found: list[tuple[str, Path]] = []
    if explicit:
        found.append(("--comfyui", Path(explicit).expanduser()))
    if env.get("COMFYUI_PATH"):
        found.append(("COMFYUI_PATH", Path(env["COMFYUI_PATH"]).expanduser()))
    found.append(("comfy-cli default", default_workspace(home)))
    found.append(("home", home / "ComfyUI"))
    return found


def find_comfyui(explicit: str | os.PathLike[str] | None = None,
                 python: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None,
                 home: Path | None = None) -> ComfyInstall:
    """Return the first ComfyUI found, or raise `ComfyUINotFound` saying how to get one.

    An explicit `--comfyui` or `COMFYUI_PATH` that is not a ComfyUI is an error,
    not a reason to fall through silently to another install.
    """
    looked = []
    for source, path in candidates(explicit, env, home):
        looked.append(f"  - {path} ({source})")
        if _is_comfyui(path):
            root = path.resolve()
            py = Path(python).expanduser() if python else _venv_python(root)
            if py is None:
                raise ComfyUINotFound(
                    f"ComfyUI found at {root}, but not its Python: it has no .venv/ or venv/. "
                    "Create one (python -m venv .venv && .venv/bin/pip install -r "
                    "requirements.txt) or pass --python PATH.")
            if not py.is_file():
                raise ComfyUINotFound(f"--python {py} does not exist")
            return ComfyInstall(root=root, python=py)
        if source in ("--comfyui", "COMFYUI_PATH"):
            raise ComfyUINotFound(
                f"{source} points at {path}, which is not a ComfyUI install "
                "(it has no main.py and comfy/ folder).")
    raise ComfyUINotFound(HOW_TO_GET_COMFYUI.format(looked="\n".join(looked)))


def main(argv: list[str] | None = None) -> int:
    """`python -m comfy_remote_exec.discovery`: print what was found, or how to get it."""
    args = sys.argv[1:] if argv is None else argv
    try:
        found = find_comfyui(args[0] if args else None)
    except ComfyUINotFound as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"ComfyUI: {found.root}\nPython:  {found.python}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
