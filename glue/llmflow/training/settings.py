"""Training settings: ``settings.training`` (env ``LLMFLOW_TRAINING__...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class TrainingSettings(BaseModel):
    """Where fine-tuning jobs run, where their files live and where they are tracked."""

    runner: Literal["local", "kubernetes"] = Field(
        default="local",
        description="local: llamafactory-cli in .venv-train on this machine; kubernetes: a "
        "batch/v1 Job in the tenant namespace",
    )
    work_dir: Path | None = Field(
        default=None, description="job directories (default: data_dir/training)"
    )
    train_venv: Path = Field(
        default=Path(".venv-train"),
        description="the environment of LLaMA-Factory and MLflow (made by .ci/train-env.sh)",
    )
    max_attempts: int = Field(
        default=2,
        ge=1,
        le=10,
        description="attempts of a job; a retry resumes from the last checkpoint",
    )
    allow_full_finetune: bool = Field(
        default=False,
        description="full fine-tuning needs many GPUs: the standard/ha profiles switch it on",
    )
    default_template: str = Field(
        default="default", description="LLaMA-Factory chat template when a job names none"
    )
    max_gpus_per_job: int = Field(default=8, ge=0)
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server the trainer and the registry use"
    )
    mlflow_token: SecretStr | None = Field(
        default=None, description="bearer token for the MLflow server (mlflow-oidc-auth)"
    )
    experiment_format: str = Field(
        default="tenants/{tenant}", description="the tenant's MLflow experiment (as tenancy)"
    )
    registered_model_format: str = Field(
        default="{tenant}.{name}", description="the registered model of a tenant's adapter"
    )
    code_version: str | None = Field(
        default=None,
        description="git commit recorded as lineage (default: read from the checkout, if any)",
    )
    # kubernetes runner
    image: str = Field(
        default="docker.io/hiyouga/llamafactory:0.9.4",
        description="the LLaMA-Factory image (platform/platform.yaml, component llama-factory)",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    pvc_name: str = Field(
        default="llmflow-training",
        description="PersistentVolumeClaim in each tenant namespace holding data, base models "
        "and outputs (mounted at /workspace)",
    )
    models_pvc_name: str | None = Field(
        default=None, description="read-only PVC with base model weights, mounted at /models"
    )
    vllm_adapter_root: str | None = Field(
        default=None,
        description="where the vLLM replicas mount the training PVC: adapters of kubernetes "
        "jobs are loaded from <root>/<job id>/output",
    )
    service_account: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    backoff_limit: int = Field(default=0, ge=0, description="Job retries are ours, not the Job's")
    ttl_seconds_after_finished: int = Field(default=86_400, ge=0)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    cpu_request: str = "4"
    memory_request: str = "32Gi"
    memory_limit: str = "64Gi"
    shm_size: str = Field(default="16Gi", description="/dev/shm for the data loaders and NCCL")
