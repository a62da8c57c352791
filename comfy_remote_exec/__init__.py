"""comfy-remote-exec: run ComfyUI workflows on remote GPUs as if they ran locally.

The package splits into the wire protocol (`protocol`, shared by both sides), the
remote worker (`worker`), and later the local extension. Importing the package
itself pulls in nothing beyond the standard library, so the launcher can use
`discovery` before any dependency is installed.
"""

__version__ = "0.1.0"
