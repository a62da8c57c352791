"""`python -m comfy_remote_exec <tool> ...`: a dispatcher to the package's command lines
(`stack`: `comfy_remote_exec.stack`). Each tool keeps its own parser."""

from __future__ import annotations

import sys

TOOLS = ("stack",)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TOOLS:
        print(f"usage: python -m comfy_remote_exec {{{','.join(TOOLS)}}} ...", file=sys.stderr)
        return 2
    from .stack.cli import main as stack_main
    return stack_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
