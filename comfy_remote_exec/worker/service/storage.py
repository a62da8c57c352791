"""S3-compatible storage for outputs too large to travel inline, and large inputs.

Configured like worker-comfyui: `BUCKET_ENDPOINT_URL` (the bucket's URL, e.g.
`https://<account>.r2.cloudflarestorage.com/<bucket>` or
`http://127.0.0.1:9000/<bucket>`; the bucket is the first path segment, or
`BUCKET_NAME`), `BUCKET_ACCESS_KEY_ID`, `BUCKET_SECRET_ACCESS_KEY`, and
optionally `BUCKET_REGION`. Everything handed to clients is a presigned URL,
so clients never hold bucket credentials.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_EXPIRY = 24 * 3600


@dataclass
class S3Storage:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    expiry: int = DEFAULT_EXPIRY

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Storage | None:
        env = os.environ if env is None else env
        url = env.get("BUCKET_ENDPOINT_URL")
        if not url or not env.get("BUCKET_ACCESS_KEY_ID"):
            return None
        parts = urlsplit(url)
        path_bucket = parts.path.strip("/").split("/", 1)[0]
        bucket = env.get("BUCKET_NAME") or path_bucket
        if not bucket:
            raise ValueError("BUCKET_ENDPOINT_URL must name the bucket (…/<bucket>) "
                             "or BUCKET_NAME must be set")
        return cls(endpoint=f"{parts.scheme}://{parts.netloc}", bucket=bucket,
                   access_key=env["BUCKET_ACCESS_KEY_ID"],
                   secret_key=env.get("BUCKET_SECRET_ACCESS_KEY", ""),
                   region=env.get("BUCKET_REGION", "us-east-1"))

    @functools.cached_property
    def _client(self) -> Any:
        """One client (and its connection pool) for the storage's life; boto3's are
        thread-safe."""
        import boto3  # heavy import, only where storage is configured
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(signature_version="s3v4",
                                          s3={"addressing_style": "path"}))

    def _put(self, key: str, path: Path) -> str:
        self._client.upload_file(str(path), self.bucket, key)
        return self._presign("get_object", key)

    async def put_file(self, key: str, path: Path) -> str:
        """Upload `path` as `key`; returns a presigned GET URL."""
        return await asyncio.to_thread(self._put, key, path)

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError:
            return False

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, key)

    def _presign(self, method: str, key: str) -> str:
        return str(self._client.generate_presigned_url(
            method, Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expiry))

    async def upload_url(self, key: str) -> str:
        return await asyncio.to_thread(self._presign, "put_object", key)

    async def download_url(self, key: str) -> str:
        return await asyncio.to_thread(self._presign, "get_object", key)
