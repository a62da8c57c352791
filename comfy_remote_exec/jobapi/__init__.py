"""What the extension's backends and the worker both need, importing neither.

`worker/` and `backends/` never import each other; code both sides use (today:
starting a worker process, `spawn`) lives here. Standard library only, so the
launcher can import it before any dependency is installed.
"""
