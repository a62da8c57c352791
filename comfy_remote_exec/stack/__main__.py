"""`python -m comfy_remote_exec.stack`: the stack file's command line (see `cli`)."""

from .cli import main

raise SystemExit(main())
