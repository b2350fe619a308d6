"""Dataset versions of a tenant: import, list, show, export, diff, materialize.

A version is immutable. Its files live in the tenant's object-store space under
``datasets/{name}/{version}/`` (``<name>_train.json``, ``<name>_val.json``,
``dataset_info.json``, ``manifest.json``), its row in ``dataset_versions`` records their
SHA-256, and :func:`materialize` refuses files whose hash no longer matches. Importing data
whose content hash equals the latest version's creates no new version.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from llmflow.errors import LLMFlowError
from llmflow.training.datasets.config import DatasetSettings
from llmflow.training.datasets.errors import (
    DatasetFormatError,
    DatasetNotFound,
    DatasetVersionExists,
)
from llmflow.training.datasets.examples import (
    Example,
    Format,
    content_key,
    from_record,
    normalize,
    prompt_key,
)
from llmflow.training.datasets.models import DatasetVersion
from llmflow.training.datasets.prepare import (
    PreparedDataset,
    build_files,
    deduplicate,
    dumps_obj,
    quality_report,
    scrub,
    split,
)
from llmflow.training.datasets.readers import SourceRows
from llmflow.training.datasets.tracking import NOT_CONFIGURED, MlflowLogged, log_version

if TYPE_CHECKING:
    from llmflow.runtime import Runtime

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
MANIFEST = "manifest.json"
Progress = Callable[[int], None]


def dataset_settings(runtime: Runtime) -> DatasetSettings:
    """``Settings.datasets``."""
    return runtime.settings.datasets


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise DatasetFormatError(
            f"dataset name {name!r}: use 1-63 lower-case letters, digits, '-' or '_' "
            "(it becomes part of file names and object keys)"
        )
    return name


def version_prefix(name: str, version: str) -> str:
    return f"datasets/{name}/{version}/"


@dataclass
class ImportResult:
    version: DatasetVersion
    manifest: dict[str, Any]
    created: bool
    """False when the data equals the latest version's (no new version was written)."""
    mlflow: MlflowLogged

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.version.summary(),
            "created": self.created,
            "report": self.version.report,
            "mlflow": self.mlflow.to_dict(),
        }


class DatasetService:
    """The dataset versions of every tenant, over the runtime's database and object store."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = dataset_settings(runtime)

    # ---------------------------------------------------------------- reading versions
    async def versions(self, tenant: str, name: str | None = None) -> list[DatasetVersion]:
        async with self.runtime.sessions() as session:
            query = select(DatasetVersion).where(DatasetVersion.tenant_id == tenant)
            if name is not None:
                query = query.where(DatasetVersion.name == name)
            rows = await session.scalars(query.order_by(DatasetVersion.name, DatasetVersion.seq))
            return list(rows)

    async def get(self, tenant: str, name: str, version: str = "latest") -> DatasetVersion:
        """One version; ``latest`` is the most recent one of ``name``."""
        async with self.runtime.sessions() as session:
            query = select(DatasetVersion).where(
                DatasetVersion.tenant_id == tenant, DatasetVersion.name == name
            )
            if version == "latest":
                query = query.order_by(DatasetVersion.seq.desc()).limit(1)
            else:
                query = query.where(DatasetVersion.version == version)
            row = await session.scalar(query)
        if row is None:
            raise DatasetNotFound(f"dataset {name}@{version} not found in tenant {tenant}")
        return row

    async def read_file(self, row: DatasetVersion, file_name: str) -> bytes:
        """A file of a version, checked against the SHA-256 recorded at import."""
        entry = row.files.get(file_name)
        if entry is None:
            raise DatasetNotFound(f"{row.name}@{row.version} has no file {file_name}")
        data = await self.runtime.object_store.get(row.tenant_id, entry["key"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise LLMFlowError(
                f"{entry['key']} does not match the SHA-256 recorded at import: the stored "
                "version was modified; re-import it as a new version"
            )
        return data

    async def examples(self, row: DatasetVersion) -> dict[str, list[Example]]:
        """The examples of both splits of a stored version."""
        fmt: Format = "sharegpt" if row.format == "sharegpt" else "alpaca"
        out: dict[str, list[Example]] = {}
        for split_name in ("train", "val"):
            data = await self.read_file(row, f"{row.name}_{split_name}.json")
            out[split_name] = [from_record(r, fmt) for r in json.loads(data)]
        return out

    # ---------------------------------------------------------------- import
    async def prepare(
        self,
        tenant: str,
        name: str,
        source: SourceRows,
        *,
        fmt: Format | None = None,
        classification: str | None = None,
        val_ratio: float | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> PreparedDataset:
        """PII scrub, dedupe, split and the files, without storing anything."""
        check_name(name)
        if not source.examples:
            reasons = ", ".join(sorted({r.reason for r in source.rejected})) or "no rows"
            raise DatasetFormatError(
                f"the source gave no usable examples ({source.total} rows; rejected: {reasons})"
            )
        settings = self.settings
        guard = await self.runtime.pii_guard()
        classification = classification or settings.pii_classification
        ratio = settings.val_ratio if val_ratio is None else val_ratio
        split_seed = settings.split_seed if seed is None else seed

        def work() -> PreparedDataset:
            scrubbed, blocked, pii = scrub(
                source.examples,
                guard,
                tenant=tenant,
                classification=classification,
                progress=progress,
            )
            unique, duplicates = deduplicate(scrubbed)
            train, val = split(unique, ratio, split_seed)
            rejected = [*source.rejected, *blocked, *duplicates]
            report = quality_report(
                source_rows=source.total, train=train, val=val, rejected=rejected, pii=pii
            )
            report["split"] = {"val_ratio": ratio, "seed": split_seed, "method": "sha256-bucket"}
            report["dedupe"] = "exact after NFKC + case-fold + whitespace collapse, all texts"
            return build_files(name, fmt, train, val, report)

        return await asyncio.to_thread(work)

    async def import_source(
        self,
        tenant: str,
        name: str,
        source: SourceRows,
        source_info: dict[str, Any],
        *,
        fmt: Format | None = None,
        version: str | None = None,
        classification: str | None = None,
        val_ratio: float | None = None,
        seed: int | None = None,
        created_by: str = "",
        progress: Progress | None = None,
    ) -> ImportResult:
        """Prepare the data and store it as a new immutable version (or return the latest
        version unchanged when its content hash is the same and no version was named)."""
        if version is not None and (not VERSION.match(version) or version == "latest"):
            raise DatasetFormatError(
                f"version {version!r}: 1-32 letters, digits, '.', '-' or '_' (not 'latest')"
            )
        prepared = await self.prepare(
            tenant,
            name,
            source,
            fmt=fmt,
            classification=classification,
            val_ratio=val_ratio,
            seed=seed,
            progress=progress,
        )
        digest = prepared.content_sha256
        async with self.runtime.sessions() as session, session.begin():
            # One writer per dataset name: the version number, the object keys and the row
            # are decided under a transaction-scoped advisory lock, so two concurrent imports
            # can never write files under the same version prefix.
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"llmflow.dataset:{tenant}:{name}"},
            )
            latest = await session.scalar(
                select(DatasetVersion)
                .where(DatasetVersion.tenant_id == tenant, DatasetVersion.name == name)
                .order_by(DatasetVersion.seq.desc())
                .limit(1)
            )
            if latest is not None and latest.content_sha256 == digest and version is None:
                stored_manifest = json.loads(await self.read_file(latest, MANIFEST))
                note = MlflowLogged(latest.mlflow_run_id, None, None, "unchanged: not logged again")
                return ImportResult(latest, stored_manifest, False, note)
            seq = (latest.seq if latest is not None else 0) + 1
            version = version or f"v{seq}"
            taken = await session.scalar(
                select(func.count()).where(
                    DatasetVersion.tenant_id == tenant,
                    DatasetVersion.name == name,
                    DatasetVersion.version == version,
                )
            )
            if taken:
                raise DatasetVersionExists(f"{name}@{version} exists; versions are immutable")
            row, manifest, manifest_bytes = self._describe(
                tenant, name, version, seq, prepared, source_info, created_by
            )
            # objects first, row last: a crash in between leaves unreferenced objects that
            # the next import of this version overwrites, never a row without its files
            payloads = {**prepared.files, MANIFEST: manifest_bytes}
            for file_name, data in payloads.items():
                await self.runtime.object_store.put(tenant, str(row.files[file_name]["key"]), data)
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise DatasetVersionExists(
                    f"{name}@{version} was written by a concurrent import; versions are immutable"
                ) from exc
        mlflow_uri = manifest["mlflow"]["tracking_uri"]
        logged = await self._log_mlflow(tenant, row, prepared, manifest_bytes, mlflow_uri)
        return ImportResult(row, manifest, True, logged)

    def _describe(
        self,
        tenant: str,
        name: str,
        version: str,
        seq: int,
        prepared: PreparedDataset,
        source_info: dict[str, Any],
        created_by: str,
    ) -> tuple[DatasetVersion, dict[str, Any], bytes]:
        """The row, the manifest and its bytes of a new version (nothing written yet)."""
        created_at = datetime.now(UTC)
        prefix = version_prefix(name, version)
        files = {
            file_name: {
                "key": prefix + file_name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
            for file_name, data in prepared.files.items()
        }
        manifest: dict[str, Any] = {
            "name": name,
            "version": version,
            "tenant": tenant,
            "format": prepared.format,
            "counts": {
                "train": prepared.train_rows,
                "val": prepared.val_rows,
                "source_rows": prepared.report["source_rows"],
                "rejected": sum(prepared.report["rejected"].values()),
            },
            "files": {k: {"sha256": v["sha256"], "bytes": v["bytes"]} for k, v in files.items()},
            "content_sha256": prepared.content_sha256,
            "created_at": created_at.isoformat(),
            "created_by": created_by,
            "source": source_info,
            "pii": prepared.report["pii"],
        }
        mlflow_uri = self.settings.mlflow_tracking_uri or self.runtime.settings.tenancy.mlflow_url
        manifest["mlflow"] = {"tracking_uri": mlflow_uri, "logged": bool(mlflow_uri)}
        manifest_bytes = dumps_obj(manifest)
        files[MANIFEST] = {
            "key": prefix + MANIFEST,
            "sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "bytes": len(manifest_bytes),
        }
        row = DatasetVersion(
            tenant_id=tenant,
            name=name,
            version=version,
            seq=seq,
            format=prepared.format,
            content_sha256=prepared.content_sha256,
            train_rows=prepared.train_rows,
            val_rows=prepared.val_rows,
            files=files,
            source=source_info,
            report=prepared.report,
            created_by=created_by,
            created_at=created_at,
        )
        return row, manifest, manifest_bytes

    async def _log_mlflow(
        self,
        tenant: str,
        row: DatasetVersion,
        prepared: PreparedDataset,
        manifest: bytes,
        tracking_uri: str | None,
    ) -> MlflowLogged:
        if not tracking_uri:
            return NOT_CONFIGURED
        experiment = self.runtime.settings.tenancy.mlflow_experiment_format.format(tenant=tenant)
        report = prepared.report
        try:
            logged = await asyncio.to_thread(
                log_version,
                tracking_uri,
                experiment,
                tenant=tenant,
                name=row.name,
                version=row.version,
                digest=row.content_sha256,
                source=f"llmflow://{tenant}/{version_prefix(row.name, row.version)}",
                params={
                    "dataset.name": row.name,
                    "dataset.version": row.version,
                    "dataset.format": row.format,
                    "dataset.content_sha256": row.content_sha256,
                    "dataset.pii_surface": str(report["pii"]["surface"]),
                    "dataset.split": json.dumps(report["split"], sort_keys=True),
                },
                profile={
                    "train_rows": row.train_rows,
                    "val_rows": row.val_rows,
                    "duplicates_dropped": report["duplicates_dropped"],
                    "rejected_rows": sum(report["rejected"].values()),
                    "pii_entities": sum(report["pii"]["entities"].values()),
                },
                artifacts={
                    "quality_report.json": dumps_obj(report),
                    "dataset_info.json": prepared.files["dataset_info.json"],
                    MANIFEST: manifest,
                },
            )
        except LLMFlowError as exc:
            return MlflowLogged(None, experiment, tracking_uri, f"MLflow logging failed: {exc}")
        async with self.runtime.sessions() as session:
            stored = await session.get(DatasetVersion, row.id)
            if stored is not None:
                stored.mlflow_run_id = logged.run_id
                await session.commit()
        row.mlflow_run_id = logged.run_id
        return logged

    # ---------------------------------------------------------------- export and diff
    async def materialize(self, tenant: str, name: str, version: str, dest: Path) -> Path:
        """Write the version's files into ``dest`` (created if needed); returns ``dest``."""
        row = await self.get(tenant, name, version)
        dest.mkdir(parents=True, exist_ok=True)
        for file_name in (f"{row.name}_train.json", f"{row.name}_val.json", "dataset_info.json"):
            data = await self.read_file(row, file_name)
            await asyncio.to_thread((dest / file_name).write_bytes, data)
        manifest = await self.read_file(row, MANIFEST)
        await asyncio.to_thread((dest / MANIFEST).write_bytes, manifest)
        return dest

    async def diff(
        self, tenant: str, name_a: str, version_a: str, name_b: str, version_b: str
    ) -> dict[str, Any]:
        """Rows added, removed and changed from A to B, and the change of the report's numbers.

        Rows are matched by everything but the final answer (normalised): the same question
        with another answer is *changed*; a question only in B is *added*."""
        row_a = await self.get(tenant, name_a, version_a)
        row_b = await self.get(tenant, name_b, version_b)
        a = await self.examples(row_a)
        b = await self.examples(row_b)
        return diff_examples(row_a, [*a["train"], *a["val"]], row_b, [*b["train"], *b["val"]])


def _index(examples: Sequence[Example]) -> dict[str, tuple[set[str], Example]]:
    out: dict[str, tuple[set[str], Example]] = {}
    for example in examples:
        keys, first = out.get(prompt_key(example), (set(), example))
        keys.add(content_key(example))
        out[prompt_key(example)] = (keys, first)
    return out


def _sample(example: Example) -> dict[str, str]:
    return {
        "prompt": normalize(example.prompt)[:120],
        "response": normalize(example.response)[:120],
    }


def diff_examples(
    row_a: DatasetVersion,
    a: Sequence[Example],
    row_b: DatasetVersion,
    b: Sequence[Example],
    samples: int = 5,
) -> dict[str, Any]:
    index_a, index_b = _index(a), _index(b)
    added = [index_b[k][1] for k in index_b if k not in index_a]
    removed = [index_a[k][1] for k in index_a if k not in index_b]
    changed = [
        (index_a[k][1], index_b[k][1])
        for k in index_b
        if k in index_a and index_a[k][0] != index_b[k][0]
    ]
    unchanged = sum(1 for k in index_b if k in index_a and index_a[k][0] == index_b[k][0])

    def numbers(row: DatasetVersion) -> dict[str, float]:
        report = row.report
        lengths = report.get("lengths_chars", {})
        return {
            "train": row.train_rows,
            "val": row.val_rows,
            "rejected": float(sum(report.get("rejected", {}).values())),
            "duplicates_dropped": float(report.get("duplicates_dropped", 0)),
            "pii_entities": float(sum(report.get("pii", {}).get("entities", {}).values())),
            "prompt_chars_mean": float(lengths.get("prompt", {}).get("mean", 0.0)),
            "response_chars_mean": float(lengths.get("response", {}).get("mean", 0.0)),
        }

    na, nb = numbers(row_a), numbers(row_b)
    return {
        "a": f"{row_a.name}@{row_a.version}",
        "b": f"{row_b.name}@{row_b.version}",
        "rows": {
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "unchanged": unchanged,
        },
        "stats": {k: {"a": na[k], "b": nb[k], "delta": round(nb[k] - na[k], 3)} for k in na},
        "samples": {
            "added": [_sample(e) for e in added[:samples]],
            "removed": [_sample(e) for e in removed[:samples]],
            "changed": [
                {
                    "prompt": _sample(new)["prompt"],
                    "a": _sample(old)["response"],
                    "b": _sample(new)["response"],
                }
                for old, new in changed[:samples]
            ],
        },
    }


async def materialize(
    runtime: Runtime, tenant_id: str, name: str, version: str, dest: Path
) -> Path:
    """Write dataset ``name@version`` of ``tenant_id`` into ``dest`` for LLaMA-Factory.

    Layout: ``dest/dataset_info.json`` (entries ``<name>_train`` and ``<name>_val``),
    ``dest/<name>_train.json``, ``dest/<name>_val.json`` and ``dest/manifest.json`` (name,
    version, format, counts, sha256 per file, created_at, source, PII report). ``version``
    may be ``latest``. Every file is checked against the SHA-256 recorded at import.
    """
    return await DatasetService(runtime).materialize(tenant_id, name, version, dest)
