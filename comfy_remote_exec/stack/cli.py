"""`python -m comfy_remote_exec.stack`: show, install-nodes, download, freeze, diff.

The command line the image builds and volume set-up scripts call. It lives
apart from `spec` so that module stays the parser and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RemoteExecError
from ..fsutil import human_size
from .diff import compare, fetch_remote, report
from .download import download_models
from .freeze import freeze, render
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
    frozen = sub.add_parser("freeze", help="write a stack file from a local ComfyUI install")
    frozen.add_argument("--comfyui", required=True, help="the ComfyUI install")
    frozen.add_argument("--base-directory", help="where its custom_nodes/, models/ and "
                        "user/ are, if not in the install (ComfyUI's --base-directory)")
    frozen.add_argument("--workflow", action="append", metavar="FILE",
                        help="a workflow (UI or API format) whose models to list; repeat "
                        "for more (default: every saved workflow, user/default/workflows)")
    frozen.add_argument("--extra-model-paths-config", action="append", metavar="FILE",
                        help="an extra_model_paths.yaml whose folders ComfyUI also searches; "
                        "repeat for more (default: the install's own, if it has one)")
    frozen.add_argument("--object-info", metavar="FILE|URL",
                        help="the local ComfyUI's /object_info, to record node types")
    frozen.add_argument("--base", metavar="STACK",
                        help="a stack file whose model URLs to reuse (default: --stack if "
                        "it exists)")
    frozen.add_argument("--stack", default=DEFAULT_STACK, help=argparse.SUPPRESS)
    frozen.add_argument("--out", help="write here (default: standard output)")
    diff = sub.add_parser("diff", parents=[common],
                          help="compare the stack with a worker's nodes and models")
    diff.add_argument("--url", required=True, help="the worker's URL")
    diff.add_argument("--token-env", default="REMOTE_EXEC_TOKEN",
                      help="environment variable holding its token (default: %(default)s)")
    diff.add_argument("--json", action="store_true", help="print the differences as JSON")
    return top


def _object_info(where: str | None) -> dict[str, Any] | None:
    if not where:
        return None
    if where.startswith(("http://", "https://")):
        import httpx
        try:
            data = httpx.get(where, timeout=60).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RemoteExecError(f"cannot read {where}: {exc}") from exc
    else:
        try:
            data = json.loads(Path(where).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RemoteExecError(f"cannot read {where}: {exc}") from exc
    if not isinstance(data, dict):
        raise RemoteExecError(f"{where} is not an object_info answer")
    return data


def run_freeze(args: argparse.Namespace) -> None:
    base_file = args.base or (args.stack if args.stack and Path(args.stack).is_file()
                              else None)
    frozen = freeze(Path(args.comfyui),
                    base_dir=Path(args.base_directory) if args.base_directory else None,
                    workflows=[Path(w) for w in args.workflow] if args.workflow else None,
                    object_info=_object_info(args.object_info),
                    base=load_stack(base_file) if base_file else None,
                    extra_model_paths=[Path(c) for c in args.extra_model_paths_config]
                    if args.extra_model_paths_config else None)
    text = render(frozen)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for note in frozen.notes:
        print(f"note: {note}", file=sys.stderr)
    unknown = [m.relpath for m in frozen.stack.models if m.url is None]
    if unknown:
        print(f"{len(unknown)} models need a download URL: {', '.join(unknown)}",
              file=sys.stderr)


def run_diff(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    object_info, models = fetch_remote(args.url, os.environ.get(args.token_env) or None)
    found = compare(stack, object_info, models)
    print(json.dumps(found.to_dict(), indent=2) if args.json else report(found))
    return 0 if found.same else 3


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "freeze":
            run_freeze(args)
            return 0
        if args.command == "diff":
            return run_diff(args)
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
        types = f"  ({len(node.node_types)} node types)" if node.node_types else ""
        lines.append(f"  {node.name:<28} {node.pin}{extra}{types}")
    lines += ["", f"Models ({len(stack.models)}):"]
    for model in stack.models:
        size = human_size(model.size) if model.size else "size ?"
        checks = "sha256" if model.sha256 else "unverified"
        gated = f"  gated: {model.token_env}" if model.token_env else ""
        no_url = "  NO URL: add one, or ship it from the local machine" \
            if model.url is None else ""
        lines.append(f"  {model.relpath:<58} {size:>10}  {checks}{gated}{no_url}")
    known = sum(m.size or 0 for m in stack.models)
    unknown = sum(1 for m in stack.models if not m.size)
    more = f" + {unknown} of unknown size" if unknown else ""
    lines.append(f"  total {human_size(known)}{more}")
    return "\n".join(lines)
