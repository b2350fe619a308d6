"""MLflow: the tenant's experiment, a run per training job, the adapter as a registered model
version with lineage, and the ``candidate`` → ``champion`` aliases.

Talks to the tracking server with ``mlflow.MlflowClient`` (mlflow-skinny in the glue image;
the server runs from ``.venv-train`` or the platform's MLflow chart). The client is
synchronous: every call runs in a worker thread.

The run is created here, before the trainer starts, and handed to it as ``MLFLOW_RUN_ID``:
transformers' ``MLflowCallback`` (``report_to: mlflow``) then logs parameters and metrics into
that run, retries of the job continue the same run, and the job record knows the run id
before the first step.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmflow.errors import InvalidRequest, NotFound, ServiceUnavailable
from llmflow.training.settings import TrainingSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATE = "candidate"
CHAMPION = "champion"
PREVIOUS_CHAMPION_TAG = "llmflow.previous_champion"
LORA_PATH_TAG = "llmflow.lora_path"
TENANT_TAG = "llmflow.tenant"
ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "all_results.json",
    "train_results.json",
    "trainer_log.jsonl",
)


@dataclass(frozen=True, slots=True)
class ModelVersionRef:
    """A registered adapter version."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "aliases": list(self.aliases),
            "tags": self.tags,
        }


def code_version(settings: TrainingSettings) -> str:
    """The git commit of the code that trained (settings, else the checkout, else unknown)."""
    if settings.code_version:
        return settings.code_version
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


class ModelRegistry:
    """Runs, artifacts and registered versions of one MLflow tracking server."""

    def __init__(self, settings: TrainingSettings) -> None:
        if not settings.mlflow_tracking_uri:
            raise ServiceUnavailable(
                "MLflow is not configured: set training.mlflow_tracking_uri "
                "(LLMFLOW_TRAINING__MLFLOW_TRACKING_URI)"
            )
        self.settings = settings
        self.tracking_uri = settings.mlflow_tracking_uri
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            if self.settings.mlflow_token is not None:
                # read by mlflow's REST layer for every request of this process
                os.environ["MLFLOW_TRACKING_TOKEN"] = self.settings.mlflow_token.get_secret_value()
            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def experiment_name(self, tenant_id: str) -> str:
        return self.settings.experiment_format.format(tenant=tenant_id)

    def model_name(self, tenant_id: str, name: str) -> str:
        return self.settings.registered_model_format.format(tenant=tenant_id, name=name)

    def trainer_env(self, tenant_id: str, run_id: str) -> dict[str, str]:
        """What transformers' MLflowCallback reads to log into our run."""
        env = {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": self.experiment_name(tenant_id),
            "MLFLOW_RUN_ID": run_id,
            "HF_MLFLOW_LOG_ARTIFACTS": "0",  # the glue registers the adapter itself
            "MLFLOW_FLATTEN_PARAMS": "1",
        }
        if self.settings.mlflow_token is not None:
            env["MLFLOW_TRACKING_TOKEN"] = self.settings.mlflow_token.get_secret_value()
        return env

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise NotFound(f"MLflow: {exc.message}") from exc
            if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
                raise InvalidRequest(f"MLflow: {exc.message}") from exc
            raise ServiceUnavailable(f"MLflow at {self.tracking_uri}: {exc.message}") from exc
        except OSError as exc:
            raise ServiceUnavailable(f"MLflow at {self.tracking_uri} unreachable: {exc}") from exc

    async def experiment_id(self, tenant_id: str) -> str:
        """The tenant's experiment, created when missing (the tenant control plane normally
        creates it with its permissions)."""
        name = self.experiment_name(tenant_id)
        experiment = await self._call(self.client.get_experiment_by_name, name)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(
            await self._call(self.client.create_experiment, name, tags={TENANT_TAG: tenant_id})
        )

    async def start_run(self, tenant_id: str, run_name: str, tags: dict[str, str]) -> str:
        experiment = await self.experiment_id(tenant_id)
        run = await self._call(
            self.client.create_run, experiment, run_name=run_name,
            tags={TENANT_TAG: tenant_id, **tags},
        )  # fmt: skip
        return str(run.info.run_id)

    async def log_lineage(self, run_id: str, lineage: dict[str, Any], config_yaml: str) -> None:
        """Dataset, base model and code version as run tags; the config as an artifact."""
        for key, value in sorted(lineage.items()):
            await self._call(self.client.set_tag, run_id, f"llmflow.{key}", str(value))
        await self._call(self.client.log_text, run_id, config_yaml, "llamafactory/config.yaml")

    async def finish_run(self, run_id: str, status: str) -> None:
        """FINISHED / FAILED / KILLED (idempotent: the trainer may have ended it already)."""
        await self._call(self.client.set_terminated, run_id, status)

    async def run_data(self, run_id: str) -> dict[str, Any]:
        run = await self._call(self.client.get_run, run_id)
        return {
            "status": run.info.status,
            "metrics": dict(run.data.metrics),
            "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        }

    async def register(
        self,
        tenant_id: str,
        name: str,
        run_id: str,
        adapter_dir: Path | None,
        lora_path: str,
        lineage: dict[str, Any],
    ) -> ModelVersionRef:
        """Log the adapter files to the run and register them as a new version with alias
        ``candidate``; ``lora_path`` (the adapter directory as vLLM replicas see it) is kept
        as a tag for deployment. ``adapter_dir`` None: the files are out of this process'
        reach (a tenant PVC); the version then points at the run and ``lora_path``."""
        files: list[Path] = []
        if adapter_dir is not None:
            files = [adapter_dir / f for f in ADAPTER_FILES if (adapter_dir / f).is_file()]
            if not any(f.name.startswith("adapter_model") for f in files):
                raise InvalidRequest(f"{adapter_dir} holds no adapter (adapter_model.*)")
        for path in files:
            await self._call(self.client.log_artifact, run_id, str(path), "adapter")
        model = self.model_name(tenant_id, name)
        from mlflow.exceptions import MlflowException

        try:
            await asyncio.to_thread(
                self.client.create_registered_model, model, tags={TENANT_TAG: tenant_id}
            )
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise ServiceUnavailable(f"MLflow: {exc.message}") from exc
        run = await self._call(self.client.get_run, run_id)
        source = f"{run.info.artifact_uri}/adapter"
        tags = {
            TENANT_TAG: tenant_id,
            LORA_PATH_TAG: lora_path,
            **{f"llmflow.{k}": str(v) for k, v in sorted(lineage.items())},
        }
        mv = await self._call(
            self.client.create_model_version, model, source, run_id=run_id, tags=tags,
            description=f"LoRA adapter {name} trained by job {lineage.get('job_id', '?')}",
        )  # fmt: skip
        await self._call(self.client.set_registered_model_alias, model, CANDIDATE, mv.version)
        return await self.version(model, str(mv.version))

    async def version(self, model: str, version: str) -> ModelVersionRef:
        mv = await self._call(self.client.get_model_version, model, version)
        return _ref(mv)

    async def by_alias(self, model: str, alias: str) -> ModelVersionRef:
        try:
            mv = await self._call(self.client.get_model_version_by_alias, model, alias)
        except InvalidRequest as exc:
            # MLflow 3 answers an unknown alias with INVALID_PARAMETER_VALUE "... not found"
            if "not found" in exc.detail:
                raise NotFound(f"{model} has no version with alias {alias!r}") from exc
            raise
        return _ref(mv)

    async def resolve(self, model: str, version_or_alias: str) -> ModelVersionRef:
        if version_or_alias.isdigit():
            return await self.version(model, version_or_alias)
        return await self.by_alias(model, version_or_alias)

    async def promote(self, model: str, version: str | None = None) -> ModelVersionRef:
        """Make ``version`` (default: the ``candidate``) the ``champion``; the champion it
        replaces is remembered on the new one for :meth:`rollback`."""
        target = await (
            self.version(model, version) if version else self.by_alias(model, CANDIDATE)
        )
        try:
            previous: ModelVersionRef | None = await self.by_alias(model, CHAMPION)
        except NotFound:
            previous = None
        if previous is not None and previous.version != target.version:
            await self._call(
                self.client.set_model_version_tag, model, target.version,
                PREVIOUS_CHAMPION_TAG, previous.version,
            )  # fmt: skip
        await self._call(self.client.set_registered_model_alias, model, CHAMPION, target.version)
        return await self.version(model, target.version)

    async def rollback(self, model: str) -> ModelVersionRef:
        """Point ``champion`` back at the version it replaced."""
        current = await self.by_alias(model, CHAMPION)
        previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise InvalidRequest(
                f"{model} v{current.version} is the first champion: nothing to roll back to"
            )
        await self._call(self.client.set_registered_model_alias, model, CHAMPION, previous)
        return await self.version(model, previous)

    async def log_evaluation(
        self, tenant_id: str, run_name: str, metrics: dict[str, float], files: list[Path],
        tags: dict[str, str],
    ) -> str:  # fmt: skip
        """An evaluation run in the tenant's experiment: metrics and the result files."""
        run_id = await self.start_run(tenant_id, run_name, {"llmflow.kind": "evaluation", **tags})
        for key, value in sorted(metrics.items()):
            await self._call(self.client.log_metric, run_id, key, float(value))
        for path in files:
            await self._call(self.client.log_artifact, run_id, str(path), "evaluation")
        await self.finish_run(run_id, "FINISHED")
        return run_id


def _ref(mv: Any) -> ModelVersionRef:
    return ModelVersionRef(
        name=str(mv.name),
        version=str(mv.version),
        run_id=mv.run_id,
        source=str(mv.source),
        aliases=tuple(getattr(mv, "aliases", ()) or ()),
        tags=dict(mv.tags or {}),
    )
