"""`python -m comfy_remote_exec <command>`: the package's command lines, by subcommand.

`models` (ship local models to the remote: `models.cli`) and `stack` (the stack
file's tooling: `stack.cli`, also `python -m comfy_remote_exec.stack`). This
module only dispatches, so each command line stays with its own room.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: python -m comfy_remote_exec {models,stack} ...

  models sync [--folder F] [--dry-run]   ship local models the remote lacks
  stack ...                              the stack file (show, install-nodes, download, ...)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "models":
        from .models.cli import main as models_main

        return models_main(rest)
    if command == "stack":
        from .stack.cli import main as stack_main

        return stack_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
