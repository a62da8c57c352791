"""Check that input media is what its name says, and fetch media by URL safely.

Media arrives from clients as base64, as a URL, or as a blob hash. Before any
of it reaches ComfyUI, its bytes must match the type its file name declares
(images are opened with Pillow; video and audio are checked by their magic
bytes), and a URL may only point at a public address unless the operator
allowed private ones. Redirects are followed by hand so that every hop is
checked, not just the first.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import warnings
from pathlib import PurePosixPath
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image

from ..errors import BadRequest, PayloadTooLarge
from ..protocol import MAX_MEDIA_BYTES

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
AUDIO_EXTS = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac"}
LATENT_EXTS = {".latent"}
MODEL3D_EXTS = {".glb", ".gltf", ".obj", ".stl", ".ply", ".fbx", ".usdz"}
MAX_REDIRECTS = 5


def kind_of(name: str) -> str:
    ext = PurePosixPath(name).suffix.lower()
    for kind, exts in (("image", IMAGE_EXTS), ("video", VIDEO_EXTS), ("audio", AUDIO_EXTS),
                       ("latent", LATENT_EXTS), ("3d", MODEL3D_EXTS)):
        if ext in exts:
            return kind
    return "file"


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


def _is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


async def check_url(url: str, *, allow_private: bool = False) -> None:
    """Refuse non-HTTP URLs, and hosts that resolve to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"URL {url!r} must be http(s) with a host", code="unsafe_url")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BadRequest(f"cannot resolve {parts.hostname!r}: {exc}", code="bad_url") from None
    for info in infos:
        if not _is_public(str(info[4][0])):
            raise BadRequest(
                f"URL {url!r} points at a loopback, private or link-local address; "
                "the worker refuses those unless started with --allow-private-urls",
                code="unsafe_url")


async def fetch_url(client: httpx.AsyncClient, url: str, *, allow_private: bool = False,
                    limit: int = MAX_MEDIA_BYTES) -> bytes:
    """Download `url` (every redirect hop checked), refusing more than `limit` bytes."""
    for _ in range(MAX_REDIRECTS + 1):
        await check_url(url, allow_private=allow_private)
        try:
            async with client.stream("GET", url, follow_redirects=False) as resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("location", ""))
                    continue
                if resp.status_code != 200:
                    raise BadRequest(f"fetching {url!r} answered HTTP {resp.status_code}",
                                     code="bad_url")
                declared = int(resp.headers.get("content-length") or 0)
                if declared > limit:
                    raise PayloadTooLarge(f"{url!r} is larger than {limit} bytes",
                                          code="too_large")
                buf = bytearray()
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        raise PayloadTooLarge(f"{url!r} is larger than {limit} bytes",
                                              code="too_large")
                return bytes(buf)
        except httpx.HTTPError as exc:
            raise BadRequest(f"fetching {url!r} failed: {exc}", code="bad_url") from None
    raise BadRequest(f"{url!r} redirected more than {MAX_REDIRECTS} times", code="bad_url")
