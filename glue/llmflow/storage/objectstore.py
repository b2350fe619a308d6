"""Object store: one interface, a local-filesystem and an S3-compatible backend.

Tenants are isolated by bucket (S3: ``<bucket_prefix><tenant>``) or top-level folder
(filesystem). Keys are built by our code only (see ``object_key``), never taken verbatim
from a caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from llmflow.settings import ObjectStoreSettings, Settings
from llmflow.storage.errors import ObjectNotFound, StorageError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_key(kb_id: str, document_id: str, version: int, filename: str) -> str:
    """A key that cannot escape its prefix whatever the uploaded file name was."""
    name = _SAFE.sub("_", Path(filename).name).strip("._") or "file"
    return f"kb/{kb_id}/{document_id}/v{version}/{name[:200]}"


class ObjectStore(ABC):
    """Async put/get/delete of whole objects in a tenant's space."""

    @abstractmethod
    async def put(self, tenant: str, key: str, data: bytes) -> None: ...

    @abstractmethod
    async def get(self, tenant: str, key: str) -> bytes: ...

    @abstractmethod
    async def delete_prefix(self, tenant: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were removed."""

    @abstractmethod
    async def exists(self, tenant: str, key: str) -> bool: ...


class FilesystemObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, tenant: str, key: str) -> Path:
        path = (self.root / _SAFE.sub("_", tenant) / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"object key escapes the store: {key!r}")
        return path

    def _put(self, tenant: str, key: str, data: bytes) -> None:
        path = self._path(tenant, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a crash never leaves a half-written original behind
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, tenant: str, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, tenant, key, data)

    async def get(self, tenant: str, key: str) -> bytes:
        path = self._path(tenant, key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def _delete_prefix(self, tenant: str, prefix: str) -> int:
        base = self._path(tenant, prefix)
        if not base.exists():
            return 0
        files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else [base]
        for p in files:
            p.unlink()
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
            d.rmdir()
        if base.is_dir():
            base.rmdir()
        return len(files)

    async def delete_prefix(self, tenant: str, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, tenant, prefix)

    async def exists(self, tenant: str, key: str) -> bool:
        return await asyncio.to_thread(self._path(tenant, key).is_file)


class S3ObjectStore(ObjectStore):
    """Any S3-compatible bucket store (the platform's, AWS, Ceph RGW, SeaweedFS ...)."""

    def __init__(self, settings: ObjectStoreSettings, client: Any = None) -> None:
        import boto3  # lazy: the filesystem backend does not need it
        from botocore.config import Config

        self.settings = settings
        self.client = client or boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id.get_secret_value()
            if settings.access_key_id
            else None,
            aws_secret_access_key=settings.secret_access_key.get_secret_value()
            if settings.secret_access_key
            else None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        self._known_buckets: set[str] = set()

    def bucket(self, tenant: str) -> str:
        # S3 bucket names: 3-63 lowercase letters, digits, hyphens
        name = re.sub(r"[^a-z0-9-]+", "-", f"{self.settings.bucket_prefix}{tenant}".lower())
        name = name.strip("-")
        if len(name) > 63:
            name = name[:54] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return name

    def _ensure_bucket(self, bucket: str) -> None:
        if bucket in self._known_buckets:
            return
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            self.client.create_bucket(Bucket=bucket)
        self._known_buckets.add(bucket)

    def _put(self, tenant: str, key: str, data: bytes) -> None:
        bucket = self.bucket(tenant)
        self._ensure_bucket(bucket)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    async def put(self, tenant: str, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, tenant, key, data)

    def _get(self, tenant: str, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket(tenant), Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise ObjectNotFound(key) from exc
            raise StorageError(str(exc)) from exc
        body: bytes = obj["Body"].read()
        return body

    async def get(self, tenant: str, key: str) -> bytes:
        return await asyncio.to_thread(self._get, tenant, key)

    def _delete_prefix(self, tenant: str, prefix: str) -> int:
        from botocore.exceptions import ClientError

        bucket = self.bucket(tenant)
        removed = 0
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                    removed += len(keys)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return 0
            raise StorageError(str(exc)) from exc
        return removed

    async def delete_prefix(self, tenant: str, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, tenant, prefix)

    def _exists(self, tenant: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket(tenant), Key=key)
            return True
        except ClientError:
            return False

    async def exists(self, tenant: str, key: str) -> bool:
        return await asyncio.to_thread(self._exists, tenant, key)


def build_object_store(settings: Settings) -> ObjectStore:
    if settings.object_store.backend == "s3":
        return S3ObjectStore(settings.object_store)
    return FilesystemObjectStore(settings.object_root)
