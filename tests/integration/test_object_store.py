"""Both object-store backends behind one interface: the filesystem and a real S3 endpoint
(moto's S3 server over HTTP on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmflow.settings import ObjectStoreSettings
from llmflow.storage.errors import ObjectNotFound, StorageError
from llmflow.storage.objectstore import (
    FilesystemObjectStore,
    ObjectStore,
    S3ObjectStore,
    object_key,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["filesystem", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[ObjectStore]:
    if request.param == "filesystem":
        yield FilesystemObjectStore(tmp_path / "objects")
    else:
        settings = ObjectStoreSettings(
            backend="s3",
            endpoint_url=s3_endpoint,
            access_key_id="test",
            secret_access_key="test",  # type: ignore[arg-type]
            bucket_prefix="llmflow-test-",
        )
        yield S3ObjectStore(settings)


async def test_put_get_delete_per_tenant(store: ObjectStore) -> None:
    key = object_key("kb1", "doc1", 2, "../../etc/정보보안 규정.hwpx")
    assert key.startswith("kb/kb1/doc1/v2/") and ".." not in key
    await store.put("dept-hr", key, "내용".encode())
    assert await store.get("dept-hr", key) == "내용".encode()
    assert await store.exists("dept-hr", key)
    # tenants are separate spaces: the same key in another tenant does not exist
    assert not await store.exists("dept-finance", key)
    with pytest.raises(ObjectNotFound):
        await store.get("dept-finance", key)
    await store.put("dept-hr", "kb/kb1/doc2/v1/a.txt", b"x")
    assert await store.delete_prefix("dept-hr", "kb/kb1/doc1/") == 1
    assert not await store.exists("dept-hr", key)
    assert await store.exists("dept-hr", "kb/kb1/doc2/v1/a.txt")
    assert await store.delete_prefix("dept-none", "kb/") == 0


async def test_filesystem_refuses_escaping_keys(tmp_path: Path) -> None:
    fs = FilesystemObjectStore(tmp_path)
    with pytest.raises(StorageError):
        await fs.put("t", "../../outside", b"x")
    assert not (tmp_path.parent / "outside").exists()


def test_s3_bucket_names_are_valid() -> None:
    s3 = S3ObjectStore(ObjectStoreSettings(backend="s3", bucket_prefix="LLMFlow_"), client=object())
    name = s3.bucket("Dept_HR" + "x" * 80)
    assert len(name) <= 63 and name == name.lower() and "_" not in name
