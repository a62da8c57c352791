"""The stack tooling: the stack file (`spec`: parse, check, install custom nodes),
model downloads onto a volume (`download`), a stack file from a local install
(`freeze`), a stack against a worker (`diff`), and the command line (`cli`,
run as `python -m comfy_remote_exec.stack`). Imports point one way:
cli -> diff -> freeze -> spec, cli -> download -> spec.
"""
