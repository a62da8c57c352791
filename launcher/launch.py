#!/usr/bin/env python3
"""Start ComfyUI with comfy-remote-exec loaded, and (for `--backend local`) its worker.

    python launcher/launch.py --backend local|http|runpod|modal [options] [-- ComfyUI args]

Standard library only until ComfyUI's own Python takes over: it finds ComfyUI
(--comfyui, COMFYUI_PATH, ~/comfy/ComfyUI, ~/ComfyUI), installs this
package's requirements into ComfyUI's environment when they are missing, and
loads the extension through a generated extra-paths file, so nothing is
copied into the user's ComfyUI. Remote mode is on by default whenever a
backend is given; the ComfyUI setting "RemoteExec.Enabled" overrides it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comfy_remote_exec.discovery import ComfyInstall, ComfyUINotFound, find_comfyui  # noqa: E402
from comfy_remote_exec.envvars import BACKENDS, ENV_DOC  # noqa: E402
from comfy_remote_exec.worker.spawn import (  # noqa: E402
    WorkerStartError,
    echo,
    start_worker,
    stop_worker,
    worker_command,
)

REQUIRED_IMPORTS = "import aiohttp, httpx, yaml, platformdirs, PIL"
# ComfyUI options that belong to the local ComfyUI only, never to a local worker.
LOCAL_ONLY = {"--base-directory", "--port", "--listen", "--output-directory",
              "--input-directory", "--temp-directory", "--user-directory",
              "--extra-model-paths-config", "--front-end-root", "--front-end-version"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    comfy_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, comfy_args = argv[:cut], argv[cut + 1:]
    env_help = "\n".join(f"  {name:<26} {text}" for name, text in ENV_DOC.items())
    parser = argparse.ArgumentParser(
        prog="python launcher/launch.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(__doc__ or "").split("\n\n")[0],
        epilog="arguments after -- go to ComfyUI (e.g. -- --cpu --base-directory DIR)\n\n"
               f"environment variables:\n{env_help}\n"
               "  COMFYUI_PATH               where ComfyUI is, if not in the usual places")
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="where Run executes (default: local, a worker on this machine)")
    parser.add_argument("--comfyui", help="ComfyUI install directory")
    parser.add_argument("--python", help="ComfyUI's Python (default: its .venv/ or venv/)")
    parser.add_argument("--port", type=int, default=8188, help="local ComfyUI port (8188)")
    parser.add_argument("--listen", default="127.0.0.1",
                        help="local ComfyUI listen address (127.0.0.1)")
    parser.add_argument("--url", help="worker URL for --backend http or modal")
    parser.add_argument("--endpoint", help="RunPod endpoint id for --backend runpod")
    parser.add_argument("--worker-dir", type=Path,
                        help="base directory of the local worker (default: state dir/worker)")
    parser.add_argument("--worker-port", type=int, default=0,
                        help="port of the local worker's job API (default: a free one)")
    parser.add_argument("--open-results", action="store_true",
                        help="open each finished output with the system viewer")
    parser.add_argument("--remote-off", action="store_true",
                        help="start with remote mode off (toggle it in the settings)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install missing requirements into ComfyUI's Python")
    args = parser.parse_args(argv)
    args.comfy_args = comfy_args
    return args


def ensure_requirements(install: ComfyInstall, allowed: bool) -> None:
    python = str(install.python)
    if subprocess.run([python, "-c", REQUIRED_IMPORTS], capture_output=True).returncode == 0:
        return
    if not allowed:
        raise SystemExit(f"ComfyUI's Python ({python}) lacks this extension's requirements; "
                         f"install them with: {python} -m pip install -r {REPO/'requirements.txt'}")
    print(f"[launcher] installing requirements into {python}", file=sys.stderr)
    subprocess.run([python, "-m", "pip", "install", "-r", str(REPO / "requirements.txt")],
                   check=True)


def ask_state_dir(install: ComfyInstall) -> Path:
    """The extension's state directory, as the extension itself will compute it."""
    code = "from comfy_remote_exec.config import state_dir; print(state_dir())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([str(install.python), "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    return Path(out.stdout.strip())


def extension_paths(state: Path) -> Path:
    """An extra-paths file whose custom_nodes folder holds only a link to this repo."""
    folder = state / "launcher"
    nodes = folder / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / "comfy-remote-exec"
    if link.is_symlink() and link.resolve() != REPO:
        link.unlink()
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    config = folder / "extra_model_paths.yaml"
    config.write_text(f"comfy_remote_exec:\n  custom_nodes: {nodes}\n", encoding="utf-8")
    return config


def worker_args(comfy_args: list[str]) -> list[str]:
    """The ComfyUI arguments that also make sense for a worker on this machine."""
    kept, skip = [], False
    for arg in comfy_args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LOCAL_ONLY:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        install = find_comfyui(args.comfyui, args.python)
    except ComfyUINotFound as exc:
        print(exc.message, file=sys.stderr)
        return 2
    ensure_requirements(install, not args.no_install)
    state = ask_state_dir(install)
    env = {**os.environ, "REMOTE_EXEC_BACKEND": args.backend,
           "REMOTE_EXEC_ENABLED": "0" if args.remote_off else "1",
           "REMOTE_EXEC_STATE_DIR": str(state)}
    if args.open_results:
        env["REMOTE_EXEC_OPEN_RESULTS"] = "1"
    if args.url or args.endpoint:
        env["REMOTE_EXEC_URL"] = args.url or args.endpoint
    worker = None
    comfy = None
    try:
        if args.backend == "local":
            token = secrets.token_urlsafe(24)
            worker_dir = args.worker_dir or state / "worker"
            cmd = worker_command(python=install.python, comfyui=install.root,
                                 comfy_python=install.python, base_dir=worker_dir,
                                 port=args.worker_port, token_env="REMOTE_EXEC_WORKER_TOKEN",
                                 comfy_args=worker_args(args.comfy_args))
            print(f"[launcher] starting the local worker in {worker_dir}", file=sys.stderr)
            worker, url = start_worker(cmd, env={**env, "REMOTE_EXEC_WORKER_TOKEN": token},
                                       sink=echo)
            env.update(REMOTE_EXEC_URL=url, REMOTE_EXEC_TOKEN=token)
        cmd = [str(install.python), str(install.main_py), "--port", str(args.port),
               "--listen", args.listen, "--extra-model-paths-config",
               str(extension_paths(state)), *args.comfy_args]
        print(f"[launcher] starting ComfyUI ({args.backend} backend) on "
              f"http://{args.listen}:{args.port}", file=sys.stderr)
        comfy = subprocess.Popen(cmd, cwd=str(install.root), env=env)
        signal.signal(signal.SIGTERM, lambda *_: comfy.terminate() if comfy else None)
        return comfy.wait()
    except WorkerStartError as exc:
        print(f"[launcher] {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    finally:
        if comfy is not None and comfy.poll() is None:
            comfy.terminate()
            try:
                comfy.wait(30)
            except subprocess.TimeoutExpired:
                comfy.kill()
        if worker is not None:
            stop_worker(worker)


if __name__ == "__main__":
    raise SystemExit(main())
