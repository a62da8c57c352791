"""Modal: what the Modal app needs from this package (memory snapshots so far).

Nothing here imports `modal`: the Modal app file wraps these pieces, and they
are tested on any machine.
"""
