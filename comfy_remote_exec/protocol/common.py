"""Names, JSON types and checks shared by every part of the wire protocol.

Every name that comes from the other side (media names, output folders and
file names) goes through `safe_relpath`; every base64 payload through
`decode_base64`, which checks the size before decoding. A malformed message
fails with a `BadRequest` that names the offending field, on both sides.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, TypeAlias

from ..errors import BadRequest, PayloadTooLarge

# JSON as it travels: what ComfyUI puts in a node's UI output or an error's inputs.
JsonValue: TypeAlias = (bool | int | float | str | list["JsonValue"]
                        | dict[str, "JsonValue"] | None)
JsonObject: TypeAlias = dict[str, JsonValue]

MAX_MEDIA_ITEMS = 10
MAX_MEDIA_BYTES = 50 * 1024 * 1024
MAX_NAME_LENGTH = 1024

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


def require(cond: bool, message: str, **details: JsonValue) -> None:
    if not cond:
        raise BadRequest(message, code="invalid_request", details=details or None)


def as_object(raw: object, where: str) -> JsonObject:
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object", code="invalid_request")
    return raw


def as_dict(raw: object, where: str) -> dict[str, Any]:
    """A client's JSON object, for fields read one by one with checks (job specs)."""
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object", code="invalid_request")
    return raw


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))


def safe_relpath(name: object, *, what: str = "file name") -> str:
    """Return `name` as a clean relative POSIX path, or raise `BadRequest`.

    Used on both sides for every name that comes from the other side: media
    names, output subfolders and file names. Refuses absolute paths, drive
    letters, `..`, empty or `.` components, NUL and other control characters.
    """
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{what} must be a non-empty string", code="unsafe_name")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"{what} is too long", code="unsafe_name")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        raise BadRequest(f"{what} {name!r} contains a control character", code="unsafe_name")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise BadRequest(f"{what} {name!r} is an absolute path", code="unsafe_name")
    parts = posix.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRequest(f"{what} {name!r} must not contain '..', '.' or empty parts",
                         code="unsafe_name")
    return "/".join(parts)


# ComfyUI's folder annotations on file values ("x.png [output]").
ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}


def split_annotation(value: str) -> tuple[str, str, str]:
    """`"x.png [output]"` -> `("x.png", " [output]", "output")`; no annotation: input."""
    for suffix, folder in ANNOTATIONS.items():
        if value.endswith(suffix):
            return value[: -len(suffix)], suffix, folder
    return value, "", "input"


def media_name(bare: str, folder: str) -> str:
    """The media name a referenced file travels under.

    Input files keep their name; an `x.png [output]` (or `[temp]`) value
    travels as `[output]/x.png`, so it never meets an input of the same name.
    """
    return bare if folder == "input" else f"[{folder}]/{bare}"


def decode_base64(data: object, *, what: str, limit: int = MAX_MEDIA_BYTES) -> bytes:
    """Strict base64 (a `data:` URL prefix is allowed); size-checked before decoding."""
    if not isinstance(data, str) or not data:
        raise BadRequest(f"{what} must be a base64 string", code="invalid_request")
    text = _DATA_URL.sub("", data, count=1).strip()
    if len(text) * 3 // 4 > limit + 3:
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes", code="too_large")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{what} is not valid base64: {exc}", code="bad_base64") from None
    if len(raw) > limit:
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes", code="too_large")
    return raw


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
