"""ANSI escape sequences are stripped from log lines."""

from __future__ import annotations

import pytest

from comfy_remote_exec.plaintext import strip_ansi


@pytest.mark.parametrize(("raw", "plain"), [
    # ComfyUI 0.26's coloured log prefix.
    ("\x1b[36m[ComfyUI]\x1b[0m got prompt", "[ComfyUI] got prompt"),
    ("\x1b[1;31mERROR\x1b[0m: boom", "ERROR: boom"),
    ("\x1b[38;5;208morange\x1b[39m", "orange"),
    ("\x1b[38;2;255;0;0mtrue colour\x1b[m", "true colour"),
    ("progress\x1b[2K\x1b[1G 50%", "progress 50%"),
    ("\x1b]8;;https://example.com\x07link\x1b]8;;\x07", "link"),
    ("\x1b]0;title\x1b\\text", "text"),
    ("\x1bcreset", "reset"),
    ("\x1b(Bcharset\x1b7saved\x1b8", "charsetsaved"),
    ("plain [brackets] and ESC-free text", "plain [brackets] and ESC-free text"),
    ("", ""),
])
def test_strip_ansi(raw: str, plain: str) -> None:
    assert strip_ansi(raw) == plain
