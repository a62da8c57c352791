"""Plain text from terminal output: ANSI escape sequences removed.

ComfyUI 0.26 colours its log prefixes, and log tails end up in error reports
and in the browser's toasts, where escape codes are noise. The same pattern
lives in js/remote_exec.js for messages that arrive from elsewhere.
"""

from __future__ import annotations

import re

# CSI (ESC [ params intermediates final: colours, cursor moves), OSC (ESC ] ...
# terminated by BEL or ESC \: titles, hyperlinks), character-set designations
# (ESC ( B) and the other two-byte escapes (ESC c, ESC 7 ...).
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
                  r"|\x1b[()*+][ -~]|\x1b[0-Z\\^-~]")


def strip_ansi(text: str) -> str:
    """`text` without its ANSI escape sequences."""
    return ANSI.sub("", text)
