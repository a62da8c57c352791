"""The stack tooling: the stack file (`spec`: parse, check, install custom nodes),
model downloads onto a volume (`download`), and the command line (`cli`, run as
`python -m comfy_remote_exec.stack`). Imports point one way: cli -> download -> spec.
"""
