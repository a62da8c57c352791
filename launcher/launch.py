#!/usr/bin/env python3
"""Start ComfyUI with comfy-remote-exec loaded, and (for `--backend local`) its worker.

    python launcher/launch.py --backend local|http|runpod|modal [options] [-- ComfyUI args]

Standard library only until ComfyUI's own Python takes over: it finds ComfyUI
(--comfyui, COMFYUI_PATH, ~/comfy/ComfyUI, ~/ComfyUI) or offers to install one
with comfy-cli, installs this package's requirements into ComfyUI's
environment when they are missing, adds --cpu when ComfyUI's torch sees no
GPU, and loads the extension through a generated extra-paths file, so nothing
is copied into the user's ComfyUI. Remote mode is on by default whenever a
backend is given; the ComfyUI setting "RemoteExec.Enabled" overrides it.
Once ComfyUI answers, the launcher checks that the extension loaded, and says
so (or why not) in one line; a ComfyUI that fails to start is reported with
its last log lines. For `--backend modal` without a URL, it asks Modal for the
deployed app's (once; then it is cached, see comfy_remote_exec/modal_url.py).

Exit codes: 2 no ComfyUI (or, for --backend modal, no URL for the deployment),
3 the local worker failed to start, 4 ComfyUI failed to start or to load the
extension, 5 setting up ComfyUI's environment failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comfy_remote_exec import local_comfy  # noqa: E402
from comfy_remote_exec.comfy_env import (  # noqa: E402
    ComfyEnvError,
    device_args,
    ensure_requirements,
    extension_config,
)
from comfy_remote_exec.comfy_install import ComfyInstallError, install_comfyui  # noqa: E402
from comfy_remote_exec.discovery import (  # noqa: E402
    ComfyInstall,
    ComfyUINotFound,
    default_workspace,
    find_comfyui,
)
from comfy_remote_exec.envvars import ENV_DOC  # noqa: E402
from comfy_remote_exec.jobapi.spawn import (  # noqa: E402
    WorkerStartError,
    echo,
    start_worker,
    stop_worker,
    worker_command,
)
from comfy_remote_exec.modal_url import ModalUrlError, find_url, names  # noqa: E402

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
    parser.add_argument("--backend", default="local",
                        help="where Run executes: local (the default, a worker on this "
                        "machine), http, runpod, modal, or another registered backend")
    parser.add_argument("--comfyui", help="ComfyUI install directory")
    parser.add_argument("--python", help="ComfyUI's Python (default: its .venv/ or venv/)")
    parser.add_argument("--port", type=int, default=8188, help="local ComfyUI port (8188)")
    parser.add_argument("--listen", default="127.0.0.1",
                        help="local ComfyUI listen address (127.0.0.1)")
    parser.add_argument("--url", help="worker URL for --backend http or modal")
    parser.add_argument("--endpoint", help="RunPod endpoint id for --backend runpod")
    modal_app, modal_function = names()
    parser.add_argument("--modal-app", default=modal_app,
                        help="--backend modal without --url: the deployed Modal app whose URL "
                        f"to find ({modal_app})")
    parser.add_argument("--modal-function", default=modal_function,
                        help=f"its web function serving the job API ({modal_function})")
    parser.add_argument("--refresh-url", action="store_true",
                        help="ask Modal for the URL again rather than using the cached one")
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
    parser.add_argument("--install-comfyui", action="store_true",
                        help="when no ComfyUI is found, install one with comfy-cli without "
                             "asking (into --comfyui DIR, else ~/comfy/ComfyUI)")
    parser.add_argument("--comfyui-url", metavar="URL",
                        help="where comfy-cli gets ComfyUI from (its --url: a git URL or a "
                             "local path, optionally URL@branch)")
    parser.add_argument("--comfy-cli-args", metavar="ARGS", default="",
                        help="more arguments for `comfy install`, as one string, e.g. "
                             "--comfy-cli-args='--skip-manager --fast-deps'")
    args = parser.parse_args(argv)
    args.comfy_args = comfy_args
    try:
        args.comfy_cli_args = shlex.split(args.comfy_cli_args)
    except ValueError as exc:
        parser.error(f"--comfy-cli-args: {exc}")
    return args


def say(line: str) -> None:
    print(f"[launcher] {line}", file=sys.stderr, flush=True)


def install_target(args: argparse.Namespace) -> Path:
    explicit = args.comfyui or os.environ.get("COMFYUI_PATH")
    return Path(explicit).expanduser() if explicit else default_workspace()


def wants_install(args: argparse.Namespace, target: Path) -> bool:
    """--install-comfyui, or a yes on an interactive terminal."""
    if args.install_comfyui:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        answer = input(f"Install ComfyUI with comfy-cli into {target} now? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def find_or_install(args: argparse.Namespace) -> ComfyInstall | None:
    try:
        return find_comfyui(args.comfyui, args.python)
    except ComfyUINotFound as exc:
        target = install_target(args)
        print(exc.message, file=sys.stderr)
        if target.exists():
            return None
        if not wants_install(args, target):
            print("Or run the launcher with --install-comfyui to have comfy-cli install it "
                  f"into {target}.", file=sys.stderr)
            return None
    try:
        install_comfyui(target, url=args.comfyui_url, extra=args.comfy_cli_args, say=say)
        return find_comfyui(target, args.python)
    except (ComfyInstallError, ComfyUINotFound) as exc:
        say(exc.message)
        return None


ASK_EXTENSION = """
import json
from comfy_remote_exec.backends import registry
from comfy_remote_exec.config import config_path, load_secrets, state_dir
try:
    secrets = load_secrets(config_path())
except Exception:
    secrets = {}
def configured(name, spec):
    section = secrets.get(name) if isinstance(secrets.get(name), dict) else {}
    return bool(section.get(spec.endpoint_key) or section.get("url"))
print(json.dumps({"state": str(state_dir()),
                  "backends": {n: {**s.public_view(), "configured": configured(n, s)}
                               for n, s in registry.specs().items()}}))
"""


def ask_extension(install: ComfyInstall) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The extension's state directory and its registered backends (with whether the
    config file names an endpoint for each), as the extension itself sees them (in
    ComfyUI's Python, which has the dependencies)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([str(install.python), "-c", ASK_EXTENSION], capture_output=True,
                         text=True, env=env, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(found["state"]), dict(found["backends"])


def modal_deployment_url(args: argparse.Namespace, install: ComfyInstall) -> str | None:
    """The deployed Modal app's URL: cached, else asked of Modal with this Python's
    `modal`, else with ComfyUI's (where `pip install modal` may have gone)."""
    try:
        return find_url(args.modal_app, args.modal_function, refresh=args.refresh_url)
    except ModalUrlError as exc:
        if not exc.no_sdk or Path(sys.executable).resolve() == install.python.resolve():
            say(exc.message)
            return None
    cmd = [str(install.python), "-m", "comfy_remote_exec.modal_url", "--app", args.modal_app,
           "--function", args.modal_function, *(["--refresh"] if args.refresh_url else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip().splitlines()[-1]
    say(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else
        f"finding the Modal app's URL failed (exit {out.returncode})")
    return None


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


def base_directory_ready(comfy_args: list[str]) -> None:
    """ComfyUI exits at start when its --base-directory has no custom_nodes/ folder."""
    for i, arg in enumerate(comfy_args):
        if arg.startswith("--base-directory="):
            base = arg.split("=", 1)[1]
        elif arg == "--base-directory" and i + 1 < len(comfy_args):
            base = comfy_args[i + 1]
        else:
            continue
        (Path(base).expanduser() / "custom_nodes").mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    install = find_or_install(args)
    if install is None:
        return 2
    try:
        ensure_requirements(install.python, install=not args.no_install, say=say)
    except ComfyEnvError as exc:
        say(exc.message)
        return 5
    try:
        state, backends = ask_extension(install)
    except subprocess.CalledProcessError as exc:
        say(f"ComfyUI's Python could not load this package: {exc.stderr.strip()}")
        return 5
    if args.backend not in backends:
        say(f"unknown backend {args.backend!r}; choose one of {', '.join(backends)}")
        return 2
    if (args.backend == "modal" and not args.url and not os.environ.get("REMOTE_EXEC_URL")
            and not backends["modal"].get("configured")):
        args.url = modal_deployment_url(args, install)
        if args.url is None:
            return 2
        say(f"the Modal app's URL: {args.url}")
    added, note = device_args(install.python, args.comfy_args)
    if note:
        say(note)
    comfy_args = [*added, *args.comfy_args]
    base_directory_ready(comfy_args)
    env = {**os.environ, "REMOTE_EXEC_BACKEND": args.backend,
           "REMOTE_EXEC_ENABLED": "0" if args.remote_off else "1",
           "REMOTE_EXEC_STATE_DIR": str(state)}
    if args.open_results:
        env["REMOTE_EXEC_OPEN_RESULTS"] = "1"
    if args.url or args.endpoint:
        env["REMOTE_EXEC_URL"] = args.url or args.endpoint
    worker = None
    comfy = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    try:
        if not backends[args.backend]["endpoint"]:  # a worker on this machine: start it
            token = secrets.token_urlsafe(24)
            worker_dir = args.worker_dir or state / "worker"
            cmd = worker_command(python=install.python, comfyui=install.root,
                                 comfy_python=install.python, base_dir=worker_dir,
                                 port=args.worker_port, token_env="REMOTE_EXEC_WORKER_TOKEN",
                                 comfy_args=worker_args(comfy_args))
            say(f"starting the local worker in {worker_dir}")
            worker, url = start_worker(cmd, env={**env, "REMOTE_EXEC_WORKER_TOKEN": token},
                                       sink=echo)
            env.update(REMOTE_EXEC_URL=url, REMOTE_EXEC_TOKEN=token)
        cmd = [str(install.python), str(install.main_py), "--port", str(args.port),
               "--listen", args.listen, "--extra-model-paths-config",
               str(extension_config(state / "launcher")), *comfy_args]
        url = local_comfy.client_url(args.listen, args.port)
        say(f"starting ComfyUI ({args.backend} backend) on {url}")
        comfy = local_comfy.start(cmd, cwd=install.root, env=env, url=url)
        status = local_comfy.wait_ready(comfy)
        config = status.get("config") or {}
        mode = "on" if config.get("enabled", not args.remote_off) else "off"
        say(f"ready: {url} with comfy-remote-exec (remote mode {mode}, "
            f"{config.get('backend', args.backend)} backend)")
        return comfy.proc.wait()
    except WorkerStartError:
        say("the local worker did not start (its output is above)")
        return 3
    except local_comfy.ComfyStartError as exc:
        say(str(exc))
        return 4
    except KeyboardInterrupt:
        return 130
    finally:
        if comfy is not None:
            local_comfy.stop(comfy)
        if worker is not None:
            stop_worker(worker)

if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C while installing: no traceback either
        raise SystemExit(130) from None
