"""Object-store reconciler: a bucket per tenant (S3) or a directory per tenant (filesystem).

S3: the bucket is named like :class:`llmflow.storage.objectstore.S3ObjectStore` names it
(``<bucket_prefix><tenant>``), tagged ``llmflow.tenant=<tenant>`` (how a removed tenant's
bucket is found again) and given a bucket policy that allows the configured principals only.
Filesystem: ``<object root>/<tenant>/`` with a marker file naming the tenant.

``apply`` never destroys documents: a removed tenant's bucket or directory is deleted only
when it is empty; one that still holds objects is kept and the plan says so —
``llmflow tenant delete`` purges it together with the tenant's knowledge bases.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmflow.settings import ObjectStoreSettings
from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler, drift, summary
from llmflow.tenancy.spec import TenantSpec

SYSTEM = "object-store"
TENANT_TAG = "llmflow.tenant"
MARKER = ".llmflow-tenant"


def bucket_policy(bucket: str, principals: Sequence[str], tenant: str) -> dict[str, Any]:
    """The bucket policy: the listed principals may read, write and list this bucket only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "LLMFlowTenantAccess",
                "Effect": "Allow",
                "Principal": {"AWS": [p.format(tenant=tenant) for p in principals]},
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


@dataclass
class BucketState:
    """What exists per tenant: policy/tags (S3) and object counts of removed tenants."""

    existing: dict[str, dict[str, Any]] = field(default_factory=dict)  # tenant -> facts


class ObjectStoreReconciler(Reconciler[BucketState]):
    """Buckets (S3) or directories (filesystem) of the tenants."""

    system = SYSTEM

    def __init__(
        self,
        settings: ObjectStoreSettings,
        object_root: Path,
        *,
        principals: Sequence[str] = (),
        client: Any = None,
    ) -> None:
        self.settings = settings
        self.root = object_root
        self.principals = tuple(principals)
        self._client = client
        self._store: Any = None
        if settings.backend == "s3":
            from llmflow.storage.objectstore import S3ObjectStore

            self._store = S3ObjectStore(settings, client=client)
            self._client = self._store.client

    @property
    def s3(self) -> bool:
        """Whether tenants get buckets (else directories)."""
        return self._store is not None

    @property
    def target(self) -> str:
        if self.s3:
            return f"s3 {self.settings.endpoint_url or 'default endpoint'}"
        return str(self.root)

    def bucket(self, tenant: str) -> str:
        """The tenant's bucket name."""
        assert self._store is not None
        name: str = self._store.bucket(tenant)
        return name

    # ------------------------------------------------------------------ observe

    async def observe(self, desired: Sequence[TenantSpec]) -> BucketState:
        names = [t.name for t in desired]
        return await asyncio.to_thread(self._observe_s3 if self.s3 else self._observe_fs, names)

    def _observe_fs(self, names: list[str]) -> BucketState:
        state = BucketState()
        if not self.root.is_dir():
            return state
        for path in sorted(self.root.iterdir()):
            marker = path / MARKER
            if path.is_dir() and marker.is_file():
                tenant = marker.read_text(encoding="utf-8").strip()
                objects = sum(1 for p in path.rglob("*") if p.is_file() and p.name != MARKER)
                state.existing[tenant] = {"path": path, "objects": objects}
        return state

    def _observe_s3(self, names: list[str]) -> BucketState:
        from botocore.exceptions import ClientError

        state = BucketState()
        try:
            buckets = [b["Name"] for b in self._client.list_buckets().get("Buckets", [])]
        except ClientError as exc:
            raise TenantReconcileError(f"object-store: list buckets: {exc}") from exc
        for bucket in buckets:
            if not bucket.startswith(self.settings.bucket_prefix.lower().strip("-")):
                continue
            try:
                tags = {
                    t["Key"]: t["Value"]
                    for t in self._client.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
                }
            except ClientError:
                tags = {}
            tenant = tags.get(TENANT_TAG)
            if tenant is None:
                # Created by the data plane before this control plane ran (no tag yet).
                tenant = next((n for n in names if self.bucket(n) == bucket), None)
            if tenant is None:
                continue
            try:
                raw = self._client.get_bucket_policy(Bucket=bucket)["Policy"]
                policy = json.loads(raw)
            except ClientError:
                policy = None
            listing = self._client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            state.existing[tenant] = {
                "bucket": bucket,
                "tags": tags,
                "policy": policy,
                "objects": int(listing.get("KeyCount", 0)),
            }
        return state

    # ------------------------------------------------------------------ plan

    def plan(self, desired: Sequence[TenantSpec], actual: BucketState) -> list[PlannedChange]:
        changes: list[PlannedChange] = []
        kind = "bucket" if self.s3 else "directory"
        for tenant in desired:
            current = actual.existing.get(tenant.name)
            want: dict[str, Any]
            if self.s3:
                name = self.bucket(tenant.name)
                want = {
                    "bucket": name,
                    "tags": {TENANT_TAG: tenant.name},
                    "policy": bucket_policy(name, self.principals, tenant.name),
                }
            else:
                name = str(self.root / tenant.name)
                want = {"path": self.root / tenant.name}
            if current is None:
                op, detail = Operation.CREATE, ""
            elif self.s3 and (
                paths := drift(want["tags"], current["tags"], "tags")
                + drift(want["policy"], current["policy"], "policy")
            ):
                op, detail = Operation.UPDATE, summary(paths)
            else:
                op, detail = Operation.UNCHANGED, ""
            changes.append(PlannedChange(SYSTEM, kind, name, op, tenant.name, detail, want))
        declared = {t.name for t in desired}
        for owner, facts in sorted(actual.existing.items()):
            if owner in declared:
                continue
            name = facts["bucket"] if self.s3 else str(facts["path"])
            if facts["objects"]:
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        kind,
                        name,
                        Operation.UNCHANGED,
                        owner,
                        f"kept: tenant removed but it holds objects; "
                        f"`llmflow tenant delete {owner}` purges it",
                    )
                )
            else:
                changes.append(
                    PlannedChange(
                        SYSTEM, kind, name, Operation.DELETE, owner, "tenant removed", facts
                    )
                )
        return changes

    # ------------------------------------------------------------------ apply

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        done: list[PlannedChange] = []
        for change in changes:
            if change.pending:
                await asyncio.to_thread(self._apply_one, change)
                done.append(change)
        return done

    def _apply_one(self, change: PlannedChange) -> None:
        assert change.tenant is not None
        if not self.s3:
            path = self.root / change.tenant
            if change.operation is Operation.DELETE:
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / MARKER).write_text(change.tenant + "\n", encoding="utf-8")
            return
        from botocore.exceptions import ClientError

        bucket = change.name
        try:
            if change.operation is Operation.DELETE:
                self._empty_bucket(bucket)
                self._client.delete_bucket(Bucket=bucket)
                return
            if change.operation is Operation.CREATE:
                try:
                    self._client.create_bucket(Bucket=bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                        raise
            want = change.payload
            self._client.put_bucket_tagging(
                Bucket=bucket,
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in want["tags"].items()]},
            )
            self._client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(want["policy"]))
        except ClientError as exc:
            raise TenantReconcileError(
                f"object-store: {change.operation.value} bucket {bucket}: {exc}"
            ) from exc

    def _empty_bucket(self, bucket: str) -> None:
        paginator = self._client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket):
            entries = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if entries:
                self._client.delete_objects(Bucket=bucket, Delete={"Objects": entries})

    def purge_changes(self, tenant: str, actual: BucketState) -> list[PlannedChange]:
        """The delete of ``tenant``'s bucket or directory whatever it holds (``tenant delete``)."""
        facts = actual.existing.get(tenant)
        if facts is None:
            return []
        kind = "bucket" if self.s3 else "directory"
        name = facts["bucket"] if self.s3 else str(facts["path"])
        detail = f"purge: {facts['objects']}+ objects" if facts["objects"] else "tenant deleted"
        return [PlannedChange(SYSTEM, kind, name, Operation.DELETE, tenant, detail, facts)]
