"""Models shipped to a RunPod network volume, through RunPod's S3-compatible API.

A RunPod endpoint's workers read models from its network volume
(`/runpod-volume/models/<folder>/<name>`), and no worker need run to fill it:
RunPod serves each volume over an S3-compatible API per datacenter
(`https://s3api-<datacenter>.runpod.io/`, bucket = the volume id, key = the
path under the volume's root, region = the datacenter id). A model goes up as
a multipart upload of `part_size` parts; a cut transfer (or a restart) finds
its unfinished upload (`ListMultipartUploads`), keeps the parts already there
whose ETag (their MD5) matches the local bytes, and sends the rest. The
object carries the file's sha256 in its metadata (`x-amz-meta-sha256`), which
is how a later ship knows the volume holds the same bytes (nothing sent) or
other bytes under the name (`model_conflict`, never overwritten).

Configuration, from the environment or the `runpod` section of the secrets
file (never sent to the browser or logged): `RUNPOD_VOLUME_ID` / `volume_id`,
`RUNPOD_DATACENTER` / `datacenter` (or a full `RUNPOD_S3_ENDPOINT` /
`s3_endpoint`), `RUNPOD_S3_ACCESS_KEY` / `s3_access_key`,
`RUNPOD_S3_SECRET_KEY` / `s3_secret_key`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Conflict, RemoteExecError, RemoteUnavailable
from ..protocol.models import check_model_folder, check_model_name
from .base import ShipResult

PART_SIZE = 64 * 1024 * 1024  # S3 parts: at least 5 MiB but the last, at most 10,000
MIN_PART = 5 * 1024 * 1024
META_KEY = "sha256"


@dataclass(frozen=True)
class VolumeConfig:
    volume_id: str
    endpoint: str
    region: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    @classmethod
    def from_settings(cls, env: Mapping[str, str], section: Mapping[str, Any]
                      ) -> VolumeConfig | None:
        """The volume's settings, or None when no volume is configured."""
        def get(env_name: str, key: str) -> str:
            return str(env.get(env_name) or section.get(key) or "")

        volume = get("RUNPOD_VOLUME_ID", "volume_id")
        if not volume:
            return None
        datacenter = get("RUNPOD_DATACENTER", "datacenter")
        endpoint = get("RUNPOD_S3_ENDPOINT", "s3_endpoint") or (
            f"https://s3api-{datacenter.lower()}.runpod.io/" if datacenter else "")
        access, secret = (get("RUNPOD_S3_ACCESS_KEY", "s3_access_key"),
                          get("RUNPOD_S3_SECRET_KEY", "s3_secret_key"))
        if not endpoint or not access or not secret:
            raise RemoteExecError("a RunPod network volume is set but not its datacenter "
                                  "(RUNPOD_DATACENTER) or S3 keys (RUNPOD_S3_ACCESS_KEY, "
                                  "RUNPOD_S3_SECRET_KEY)", code="volume_config", status=500)
        return cls(volume, endpoint, datacenter or "us-east-1", access, secret)


def _md5(path: Path, start: int, length: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        fh.seek(start)
        left = length
        while left > 0 and (chunk := fh.read(min(1024 * 1024, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _read(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(start)
        return fh.read(length)


class NetworkVolumeStore:
    """`ModelStore` over a RunPod network volume's S3 API (blocking boto3 in threads)."""

    def __init__(self, config: VolumeConfig, part_size: int = PART_SIZE) -> None:
        self.config = config
        self.part_size = max(part_size, MIN_PART)

    @functools.cached_property
    def s3(self) -> Any:
        import boto3  # heavy: only once a model ships
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.config.endpoint,
                            region_name=self.config.region,
                            aws_access_key_id=self.config.access_key,
                            aws_secret_access_key=self.config.secret_key,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 5, "mode": "standard"}))

    async def ship_model(self, folder: str, name: str, path: Path, sha256: str,
                         progress: Callable[[int, int], None] | None = None) -> ShipResult:
        key = f"models/{check_model_folder(folder)}/{check_model_name(name)}"
        try:
            return await self._ship(key, folder, name, path, sha256, progress)
        except RemoteExecError:
            raise
        except Exception as exc:  # botocore's errors, the network's
            raise RemoteUnavailable(f"shipping {folder}/{name} to the RunPod volume failed: "
                                    f"{type(exc).__name__}: {exc}",
                                    code="volume_unreachable") from exc

    async def _ship(self, key: str, folder: str, name: str, path: Path, sha256: str,
                    progress: Callable[[int, int], None] | None) -> ShipResult:
        size = path.stat().st_size
        there = await asyncio.to_thread(self._head, key)
        if there is not None:
            theirs = there.get("Metadata", {}).get(META_KEY)
            if theirs != sha256:
                raise Conflict(f"{folder}/{name} already exists on the RunPod volume with "
                               f"other bytes (sha256 {theirs or 'unknown'}); it is never "
                               "overwritten: rename the local file or remove the remote one",
                               code="model_conflict",
                               details={"folder": folder, "name": name})
            if progress is not None:
                progress(size, size)
            return ShipResult(folder, name, sha256, 0, placed=False, same=True)
        sent = await asyncio.to_thread(self._upload, key, path, size, sha256, progress)
        there = await asyncio.to_thread(self._head, key)
        if (there is None or there.get("ContentLength") != size
                or there.get("Metadata", {}).get(META_KEY) != sha256):
            raise RemoteExecError(f"{folder}/{name} did not land whole on the RunPod volume",
                                  code="model_verify_failed", status=502)
        return ShipResult(folder, name, sha256, sent, placed=True, same=False, verified=True)

    async def model_hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        """Each model's sha256 as its object's metadata records it (None: no such object,
        or one put there by other means)."""
        out: dict[str, str | None] = {}
        for name in names:
            head = await asyncio.to_thread(self._head, f"models/{folder}/{name}")
            out[name] = None if head is None else head.get("Metadata", {}).get(META_KEY)
        return out

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self.s3.head_object(Bucket=self.config.volume_id, Key=key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _pending(self, key: str) -> str | None:
        """The unfinished upload of `key` (its id), if one is there."""
        answer = self.s3.list_multipart_uploads(Bucket=self.config.volume_id, Prefix=key)
        for upload in answer.get("Uploads", []):
            if upload.get("Key") == key:
                return str(upload["UploadId"])
        return None

    def _upload(self, key: str, path: Path, size: int, sha256: str,
                progress: Callable[[int, int], None] | None) -> int:
        bucket, part = self.config.volume_id, self.part_size
        count = max(1, -(-size // part))
        upload_id = self._pending(key)
        done: dict[int, str] = {}
        if upload_id is not None:
            listed = self.s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
            for got in listed.get("Parts", []):
                number, etag = int(got["PartNumber"]), str(got["ETag"]).strip('"')
                start = (number - 1) * part
                length = min(part, size - start)
                if (number > count or got.get("Size") != length
                        or _md5(path, start, length) != etag):  # another file's: start again
                    self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                    upload_id, done = None, {}
                    break
                done[number] = etag
        if upload_id is None:
            upload_id = str(self.s3.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata={META_KEY: sha256})["UploadId"])
        sent = 0
        stored = sum(min(part, size - (n - 1) * part) for n in done)
        if progress is not None:
            progress(stored, size)
        for number in range(1, count + 1):
            if number in done:
                continue
            start = (number - 1) * part
            body = _read(path, start, min(part, size - start))
            answer = self.s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                         PartNumber=number, Body=body)
            done[number] = str(answer["ETag"]).strip('"')
            sent += len(body)
            stored += len(body)
            if progress is not None:
                progress(stored, size)
        self.s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{done[n]}"'}
                                       for n in sorted(done)]})
        return sent
