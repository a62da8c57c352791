"""`python -m comfy_remote_exec <tool> ...`: a dispatcher to the package's command lines
(`models`: `comfy_remote_exec.models.cli`, ship local models the remote lacks;
`stack`: `comfy_remote_exec.stack`). Each tool keeps its own parser."""

from __future__ import annotations

import sys

TOOLS = ("models", "stack")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TOOLS:
        print(f"usage: python -m comfy_remote_exec {{{','.join(TOOLS)}}} ...\n"
              "  models sync [--folder F] [--dry-run]   ship local models the remote lacks\n"
              "  stack ...                              the stack file's tool",
              file=sys.stderr)
        return 2
    if argv[0] == "models":
        from .models.cli import main as models_main
        return models_main(argv[1:])
    from .stack.cli import main as stack_main
    return stack_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
