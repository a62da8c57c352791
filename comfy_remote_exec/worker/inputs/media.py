"""Check that input media is what its name says.

Media arrives from clients as base64, as a URL (fetched by `urls`), or as a
blob hash. Before any of it reaches ComfyUI, its bytes must match the type
its file name declares: images are opened with Pillow; video and audio are
checked by their magic bytes.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from ...errors import BadRequest, PayloadTooLarge
from ...protocol import media_type


def kind_of(name: str) -> str:
    """The media kind a name declares (`protocol.media_type`); a GIF is checked as an
    image."""
    kind = media_type(name)
    return "image" if kind == "gif" else kind


def _looks_like_video(head: bytes) -> bool:
    return (head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3"
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:3] == b"GIF")


def _looks_like_audio(head: bytes) -> bool:
    return (head[:4] in (b"RIFF", b"fLaC", b"OggS") or head[:3] == b"ID3"
            or head[4:8] == b"ftyp" or (len(head) > 1 and head[0] == 0xFF
                                        and head[1] & 0xE0 == 0xE0))


def check_content(name: str, head: bytes, whole: bytes | None = None) -> str:
    """Raise `BadRequest` unless the bytes match the type `name` declares.

    Returns the media kind. `whole` is needed for images (Pillow verifies the
    full file); `head` (the first bytes) is enough for video and audio.
    """
    kind = kind_of(name)
    if kind == "image":
        data = whole if whole is not None else head
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    img.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PayloadTooLarge(f"image {name!r} has too many pixels",
                                  code="too_large") from None
        except Exception as exc:
            raise BadRequest(f"{name!r} is not a valid image: {exc}",
                             code="bad_media") from None
    elif kind == "video" and not _looks_like_video(head):
        raise BadRequest(f"{name!r} is not a video file", code="bad_media")
    elif kind == "audio" and not _looks_like_audio(head):
        raise BadRequest(f"{name!r} is not an audio file", code="bad_media")
    return kind


def image_ext(data: bytes) -> str:
    """File extension for image bytes, for overrides that carry no name."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "PNG").lower()
    except Exception:
        raise BadRequest("the image data is not a valid image", code="bad_media") from None
    return {"jpeg": ".jpg"}.get(fmt, f".{fmt}")
