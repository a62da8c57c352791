"""Output file descriptors (protocol v2).

Named as the job APIs existing clients speak (`shared/specs/job-apis.md`):
`type` is the media kind (`image`, `video`, `gif`, `audio`, `text`, `json`,
...), `size_bytes` the size; ComfyUI's folder type (`output`, `temp` for
previews, `input`) is `folder`. How the bytes travel is part of the
descriptor, never state kept beside it: a worker's `url`, inline base64
`data`, a presigned `download_url`, or `parts`, the number of `file_part`
chunks that came before the event in a RunPod stream (see `runpod`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from .common import JsonObject, is_sha256, require, safe_relpath

FOLDERS = ("output", "temp", "input")
MEDIA_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}),
    "gif": frozenset({".gif"}),
    "video": frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}),
    "audio": frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac"}),
    "text": frozenset({".txt", ".md"}),
    "json": frozenset({".json"}),
    "latent": frozenset({".latent"}),
    "3d": frozenset({".glb", ".gltf", ".obj", ".stl", ".ply", ".fbx", ".usdz"}),
}


def media_type(filename: str) -> str:
    """The media kind of a file, by its extension; `file` when unknown."""
    ext = PurePosixPath(filename).suffix.lower()
    for kind, exts in MEDIA_TYPES.items():
        if ext in exts:
            return kind
    return "file"


@dataclass(slots=True)
class OutputFile:
    """One file a job produced, as ComfyUI listed it in a node's UI output
    (`key`, `index`); `subfolder` and `filename` are relative to `folder`."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    folder: str
    type: str
    size_bytes: int
    sha256: str
    url: str = ""
    index: int = 0
    data: str | None = None
    download_url: str | None = None
    parts: int | None = None

    @property
    def preview(self) -> bool:
        return self.folder == "temp"

    @property
    def relpath(self) -> str:
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    def to_dict(self) -> JsonObject:
        out: JsonObject = {
            "node_id": self.node_id, "key": self.key, "index": self.index,
            "filename": self.filename, "subfolder": self.subfolder, "folder": self.folder,
            "type": self.type, "size_bytes": self.size_bytes, "sha256": self.sha256,
            "url": self.url, "preview": self.preview}
        for name, value in (("data", self.data), ("download_url", self.download_url),
                            ("parts", self.parts)):
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def parse(cls, raw: object) -> OutputFile:
        """Parse a descriptor from the other side; its names are untrusted."""
        require(isinstance(raw, dict), "an output descriptor must be an object")
        assert isinstance(raw, dict)
        filename = safe_relpath(raw.get("filename"), what="output filename")
        require("/" not in filename, "output filename must not contain '/'")
        subfolder = raw.get("subfolder") or ""
        if subfolder:
            subfolder = safe_relpath(subfolder, what="output subfolder")
        folder = raw.get("folder")
        require(folder in FOLDERS, f"output folder must be one of {', '.join(FOLDERS)}")
        sha = raw.get("sha256")
        require(is_sha256(sha), "bad output sha256")
        size = raw.get("size_bytes", 0)
        require(isinstance(size, int) and size >= 0, "output size_bytes must be an integer")
        parts = raw.get("parts")
        require(parts is None or (isinstance(parts, int) and parts > 0),
                "output parts must be a positive integer")
        data, download_url = raw.get("data"), raw.get("download_url")
        require(data is None or isinstance(data, str), "output data must be base64")
        require(download_url is None or isinstance(download_url, str),
                "output download_url must be a string")
        index = raw.get("index", 0)
        return cls(node_id=str(raw.get("node_id", "")), key=str(raw.get("key", "")),
                   filename=filename, subfolder=str(subfolder), folder=str(folder),
                   type=str(raw.get("type") or media_type(filename)), size_bytes=int(size),
                   sha256=str(sha), url=str(raw.get("url") or ""),
                   index=index if isinstance(index, int) else 0,
                   data=data, download_url=download_url, parts=parts)
