"""`python -m comfy_remote_exec.stack`: show, install-nodes, download.

The command line the image builds and volume set-up scripts call. It lives
apart from `spec` so that module stays the parser and nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import RemoteExecError
from .download import download_models, human_size
from .spec import Stack, default_installer, install_nodes, load_stack, node_commands

DEFAULT_STACK = os.environ.get("REMOTE_EXEC_STACK", "deploy/stack.yaml")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", default=DEFAULT_STACK,
                        help="the stack file (default: %(default)s, or REMOTE_EXEC_STACK)")
    top = argparse.ArgumentParser(prog="python -m comfy_remote_exec.stack",
                                  description="The worker image's ComfyUI, nodes and models.")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("show", parents=[common], help="print what the stack holds")
    nodes = sub.add_parser("install-nodes", parents=[common],
                           help="clone the custom nodes at their refs and install their deps")
    nodes.add_argument("--comfyui", required=True, help="the ComfyUI install to add them to")
    nodes.add_argument("--dry-run", action="store_true", help="print the commands only")
    down = sub.add_parser("download", parents=[common],
                          help="download the models to VOLUME/models/<folder>/<name>")
    down.add_argument("--volume", required=True, help="the volume (or base) directory")
    down.add_argument("--only", nargs="+", metavar="NAME", help="just these models")
    down.add_argument("--verify", action="store_true",
                      help="re-hash files already in place instead of trusting their size")
    down.add_argument("--parallel", type=int, default=1, metavar="N",
                      help="models fetched at once (default 1)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        stack = load_stack(args.stack)
        if args.command == "show":
            print(summary(stack))
        elif args.command == "install-nodes":
            if args.dry_run:
                for command in node_commands(stack, args.comfyui, installer=default_installer()):
                    when = (f"  # if {command.only_if} exists" if command.only_if else
                            f"  # unless {command.unless} exists" if command.unless else "")
                    print(f"{command}{when}")
            else:
                install_nodes(stack, args.comfyui)
        else:
            done = download_models(stack, args.volume, only=args.only,
                                   verify_existing=args.verify, parallel=args.parallel)
            fetched = sum(d.fetched for d in done)
            print(f"{len(done)} models in place, {human_size(fetched)} downloaded", file=sys.stderr)
    except RemoteExecError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run again to resume", file=sys.stderr)
        return 130
    return 0


def summary(stack: Stack) -> str:
    lines = [f"ComfyUI  {stack.comfyui.repo} @ {stack.comfyui.ref}", "",
             f"Custom nodes ({len(stack.custom_nodes)}):"]
    for node in stack.custom_nodes:
        extra = "  (with submodules)" if node.recursive else ""
        lines.append(f"  {node.name:<28} {node.ref[:12]}  {node.repo}{extra}")
    lines += ["", f"Models ({len(stack.models)}):"]
    for model in stack.models:
        size = human_size(model.size) if model.size else "size ?"
        checks = "sha256" if model.sha256 else "unverified"
        gated = f"  gated: {model.token_env}" if model.token_env else ""
        lines.append(f"  {model.relpath:<58} {size:>10}  {checks}{gated}")
    known = sum(m.size or 0 for m in stack.models)
    unknown = sum(1 for m in stack.models if not m.size)
    more = f" + {unknown} of unknown size" if unknown else ""
    lines.append(f"  total {human_size(known)}{more}")
    return "\n".join(lines)
