"""Dataset versions on the real embedded platform: import (PII scrubbed with the real engine)
→ stored in the object store + PostgreSQL → materialize → files LLaMA-Factory loads; a
second import → diff; MLflow logging into a real MLflow tracking store (SQLite backend)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmflow.training.datasets import DatasetService, DatasetSettings, materialize
from llmflow.training.datasets.errors import DatasetNotFound, DatasetVersionExists
from llmflow.training.datasets.examples import check_llamafactory_rows
from llmflow.training.datasets.readers import ColumnMapping, SourceRows, load_examples

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "datasets" / "ko_en_instructions.jsonl"
TENANT = "dept-datasets-it"
SECRETS = (
    "880101-1234567",
    "010-2345-6789",
    "john.smith@example.com",
    "4111 1111 1111 1111",
    "김민수",
)
"""PII values in the fixture that the platform's engine detects (it has no English NER, so
the English name in the fixture is not among them: docs/datasets.md)."""


def _rows(data: bytes, name: str = FIXTURE.name) -> SourceRows:
    return load_examples(
        data,
        name,
        None,
        ColumnMapping(),
        max_bytes=10**8,
        max_rows=10**6,
        max_field_chars=10**5,
    )


def _stored_bytes(runtime: Any, tenant: str) -> bytes:
    root = runtime.settings.object_root / tenant / "datasets"
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


async def test_import_store_materialize_diff(runtime: Any, tmp_path: Path) -> None:
    service = DatasetService(runtime)
    first = await service.import_source(
        TENANT,
        "hr-faq",
        _rows(FIXTURE.read_bytes()),
        {"kind": "jsonl", "file": FIXTURE.name},
        created_by="test",
    )
    assert first.created and first.version.version == "v1"
    assert first.version.format == "alpaca"
    report = first.version.report
    assert report["source_rows"] == 24 and report["duplicates_dropped"] == 2
    assert report["train"] + report["validation"] == 20 and report["validation"] >= 1
    assert report["pii"]["entities"]["KR_RRN"] == 1
    assert "not configured" in first.mlflow.note and first.mlflow.run_id is None

    # PII never reaches the object store
    stored = _stored_bytes(runtime, TENANT).decode()
    for secret in SECRETS:
        assert secret not in stored

    # the same data again: no new version
    again = await service.import_source(
        TENANT, "hr-faq", _rows(FIXTURE.read_bytes()), {"kind": "jsonl"}
    )
    assert not again.created and again.version.version == "v1"

    dest = await materialize(runtime, TENANT, "hr-faq", "v1", tmp_path / "data")
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["dataset_info.json", "hr-faq_train.json", "hr-faq_val.json", "manifest.json"]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["name"] == "hr-faq" and manifest["version"] == "v1"
    assert manifest["counts"]["train"] == first.version.train_rows
    assert manifest["pii"]["entities"]["PHONE_NUMBER"] == 2
    assert manifest["source"]["file"] == FIXTURE.name and manifest["created_at"]
    info = json.loads((dest / "dataset_info.json").read_text())
    assert set(info) == {"hr-faq_train", "hr-faq_val"}
    import hashlib

    for entry in info.values():
        data = (dest / entry["file_name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["files"][entry["file_name"]]["sha256"]
        check_llamafactory_rows(json.loads(data), entry)

    # version 2: one answer changed, one row added, one removed
    lines = FIXTURE.read_text().splitlines()
    changed = json.loads(lines[4])
    changed["output"] = "출장 종료일로부터 7일 이내에 정산해야 합니다."
    lines[4] = json.dumps(changed, ensure_ascii=False)
    del lines[8]  # the audit-log question
    lines.append(json.dumps({"instruction": "주차 등록은?", "output": "총무팀에 신청하세요."}))
    second = await service.import_source(
        TENANT, "hr-faq", _rows("\n".join(lines).encode()), {"kind": "jsonl"}
    )
    assert second.created and second.version.version == "v2"
    diff = await service.diff(TENANT, "hr-faq", "v1", "hr-faq", "v2")
    assert diff["rows"] == {"added": 1, "removed": 1, "changed": 1, "unchanged": 18}
    assert diff["samples"]["changed"][0]["b"].startswith("출장 종료일로부터 7일")
    assert diff["stats"]["train"]["delta"] + diff["stats"]["val"]["delta"] == 0

    listed = await service.versions(TENANT, "hr-faq")
    assert [v.version for v in listed] == ["v1", "v2"]
    assert (await service.get(TENANT, "hr-faq")).version == "v2"

    with pytest.raises(DatasetVersionExists):
        await service.import_source(TENANT, "hr-faq", _rows(FIXTURE.read_bytes()), {}, version="v2")
    # another tenant sees nothing
    with pytest.raises(DatasetNotFound):
        await materialize(runtime, "dept-other", "hr-faq", "v1", tmp_path / "x")


async def test_a_tampered_file_is_refused(runtime: Any, tmp_path: Path) -> None:
    service = DatasetService(runtime)
    result = await service.import_source(
        TENANT, "tamper", _rows(FIXTURE.read_bytes()), {"kind": "jsonl"}
    )
    key = result.version.files["tamper_train.json"]["key"]
    await runtime.object_store.put(TENANT, key, b"[]\n")
    with pytest.raises(Exception, match="does not match the SHA-256"):
        await materialize(runtime, TENANT, "tamper", "latest", tmp_path / "t")


async def test_logged_to_mlflow_as_a_dataset_input(
    runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # a SQLite store puts artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    service = DatasetService(runtime)
    service.settings = DatasetSettings(mlflow_tracking_uri=uri)
    result = await service.import_source(
        TENANT, "mlflow-faq", _rows(FIXTURE.read_bytes()), {"kind": "jsonl"}
    )
    assert result.mlflow.run_id is not None
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.mlflow.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == f"tenants/{TENANT}"
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "mlflow-faq@v1"
    assert dataset_input.dataset.digest == result.version.content_sha256[:36]
    assert run.data.params["dataset.format"] == "alpaca"
    assert run.data.metrics["train_rows"] == result.version.train_rows
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "dataset")}
    assert "dataset/quality_report.json" in artifacts
    assert (await service.get(TENANT, "mlflow-faq")).mlflow_run_id == run.info.run_id


TRAIN_PYTHON = REPO / ".venv-train" / "bin" / "python"
LOADER_CHECK = """
import json, sys
from llamafactory.data.converter import get_dataset_converter
from llamafactory.data.parser import get_dataset_list
from llamafactory.hparams import DataArguments

dest, names = sys.argv[1], sys.argv[2:]
counts = {}
for attr in get_dataset_list(names, dest):
    rows = json.load(open(f"{dest}/{attr.dataset_name}"))
    convert = get_dataset_converter(attr.formatting, attr, DataArguments(dataset_dir=dest))
    out = [convert(r) for r in rows]
    assert all(o["_prompt"] and o["_response"] for o in out), "a row was skipped as abnormal"
    counts[attr.dataset_name] = len(out)
print(json.dumps(counts))
"""


async def test_llamafactory_own_loader_reads_both_formats(runtime: Any, tmp_path: Path) -> None:
    """LLaMA-Factory 0.9.5's parser and converters (from .ci/train-env.sh's environment)."""
    probe = (
        subprocess.run(
            [str(TRAIN_PYTHON), "-c", "import llamafactory"], capture_output=True, check=False
        )
        if TRAIN_PYTHON.exists()
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("no .venv-train with llamafactory (bash .ci/train-env.sh)")
    service = DatasetService(runtime)
    for fmt in ("alpaca", "sharegpt"):
        name = f"lf-{fmt}"
        await service.import_source(
            TENANT, name, _rows(FIXTURE.read_bytes()), {"kind": "jsonl"}, fmt=fmt
        )
        dest = await materialize(runtime, TENANT, name, "latest", tmp_path / fmt)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
        done = subprocess.run(
            [str(TRAIN_PYTHON), "-c", LOADER_CHECK, str(dest), f"{name}_train", f"{name}_val"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        assert sum(counts.values()) == 20, counts


async def test_concurrent_imports_get_distinct_intact_versions(
    runtime: Any, tmp_path: Path
) -> None:
    import asyncio

    service = DatasetService(runtime)
    lines = FIXTURE.read_text().splitlines()
    sources = [_rows("\n".join(lines[:12]).encode()), _rows("\n".join(lines[12:]).encode())]
    results = await asyncio.gather(
        *(service.import_source(TENANT, "race", rows, {"kind": "jsonl"}) for rows in sources)
    )
    assert sorted(r.version.version for r in results) == ["v1", "v2"]
    for result in results:
        dest = tmp_path / result.version.version
        await materialize(runtime, TENANT, "race", result.version.version, dest)
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["content_sha256"] == result.version.content_sha256
