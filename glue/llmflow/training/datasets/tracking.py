"""Dataset versions logged to MLflow: one run per version in the tenant's experiment.

The run carries the version as an MLflow dataset input (``log_inputs``: name, digest = the
content hash, source = the object-store location, profile = row counts), the import
parameters, and the quality report and ``dataset_info.json`` as artifacts — so a training
run that names the same digest is traceable to this import.

MLflow is optional: without a tracking URI the import says so in its output (and in the
stored manifest) instead of skipping silently. The MLflow client reads its credentials from
its own environment (``MLFLOW_TRACKING_TOKEN`` / ``MLFLOW_TRACKING_USERNAME``), never from
ours.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmflow.errors import ServiceUnavailable

DATASET_SOURCE_TYPE = "llmflow-object-store"


@dataclass(frozen=True)
class MlflowLogged:
    """Where the version was logged, or why it was not."""

    run_id: str | None
    experiment: str | None
    tracking_uri: str | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "tracking_uri": self.tracking_uri,
            "note": self.note,
        }


NOT_CONFIGURED = MlflowLogged(
    None,
    None,
    None,
    "MLflow not configured (set LLMFLOW_DATASETS__MLFLOW_TRACKING_URI or "
    "LLMFLOW_TENANCY__MLFLOW_URL): the version is stored but not logged to MLflow",
)


def log_version(
    tracking_uri: str,
    experiment: str,
    *,
    tenant: str,
    name: str,
    version: str,
    digest: str,
    source: str,
    params: dict[str, str],
    profile: dict[str, Any],
    artifacts: dict[str, bytes],
) -> MlflowLogged:
    """Blocking: create the run and log the dataset input (call from a worker thread)."""
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(experiment, tags={"llmflow.tenant": tenant})
        )
        run = client.create_run(
            experiment_id,
            run_name=f"dataset {name} {version}",
            tags={
                "llmflow.tenant": tenant,
                "llmflow.kind": "dataset",
                "llmflow.dataset": name,
                "llmflow.dataset_version": version,
            },
        )
        run_id = run.info.run_id
        for key, value in sorted(params.items()):
            client.log_param(run_id, key, value[:6000])
        client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    Dataset(
                        name=f"{name}@{version}",
                        digest=digest[:36],
                        source_type=DATASET_SOURCE_TYPE,
                        source=json.dumps({"uri": source}),
                        profile=json.dumps(profile),
                    ),
                    [InputTag("mlflow.data.context", "training")],
                )
            ],
        )
        for metric, value in profile.items():
            if isinstance(value, int | float):
                client.log_metric(run_id, metric, float(value))
        with tempfile.TemporaryDirectory() as tmp:
            for file_name, data in artifacts.items():
                path = Path(tmp) / file_name
                path.write_bytes(data)
                client.log_artifact(run_id, str(path), artifact_path="dataset")
        client.set_terminated(run_id)
    except MlflowException as exc:
        raise ServiceUnavailable(f"MLflow at {tracking_uri}: {exc.message}") from exc
    return MlflowLogged(run_id, experiment, tracking_uri, f"logged to MLflow run {run_id}")
