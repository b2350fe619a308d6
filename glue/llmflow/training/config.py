"""LLaMA-Factory training configuration: what a user asks for → the YAML ``llamafactory-cli
train`` reads.

Argument names are LLaMA-Factory 0.9.5's (``llamafactory/hparams/{model,data,finetuning}_args.py``
and transformers' ``Seq2SeqTrainingArguments``; the layout follows its
``examples/train_lora/*_lora_sft.yaml`` and ``examples/train_qlora/*``). Every generated config
is checked against the real argument parser in the training environment
(:func:`llmflow.training.validate.validate_config`), so a renamed argument fails before a GPU
is booked, not after.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmflow.errors import InvalidRequest

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,46}[a-z0-9]$")
"""Adapter names go into Kubernetes object names, MLflow model names and vLLM model names."""

Method = Literal["lora", "qlora", "full"]
Precision = Literal["bf16", "fp16", "fp32"]
DeepSpeedStage = Literal["z2", "z3"]

_FORBIDDEN_EXTRA = frozenset(
    {
        # set by us from the job; a caller overriding them would escape the tenant's paths
        "model_name_or_path", "dataset", "eval_dataset", "dataset_dir", "output_dir",
        "report_to", "run_name", "resume_from_checkpoint", "deepspeed", "finetuning_type",
        "quantization_bit", "stage", "do_train", "trust_remote_code", "hub_token",
        "push_to_hub", "logging_dir", "media_dir", "tokenized_path",
    }
)  # fmt: skip


class DatasetRef(BaseModel):
    """A versioned dataset of the tenant (``llmflow.training.datasets``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=64)


class TrainingSpec(BaseModel):
    """A fine-tuning job as a user submits it (REST body, ``llmflow train submit``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="adapter name: lowercase letters, digits and '-', 2-48 chars")
    base_model: str = Field(
        min_length=1, description="base model directory as the runner sees it, or a model id"
    )
    dataset: DatasetRef
    method: Method = "lora"
    template: str | None = Field(default=None, description="LLaMA-Factory chat template name")
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: int | None = Field(default=None, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_target: list[str] = Field(
        default_factory=lambda: ["all"], description="module names, or ['all']"
    )
    learning_rate: float = Field(default=1e-4, gt=0)
    num_train_epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs when set")
    per_device_train_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=8, ge=1)
    cutoff_len: int = Field(default=2048, ge=16)
    max_samples: int | None = Field(default=None, ge=1)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int = Field(default=500, ge=1)
    eval_steps: int | None = Field(default=None, ge=1, description="evaluate every N steps")
    save_total_limit: int | None = Field(default=3, ge=1)
    precision: Precision = "bf16"
    deepspeed: DeepSpeedStage | None = None
    gpus: int = Field(default=1, ge=0, le=64)
    seed: int = 42
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="further LLaMA-Factory arguments (checked by its parser); paths, tracking "
        "and the method are ours",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError("lowercase letters, digits and '-', 2-48 characters")
        return value

    @field_validator("lora_target")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value or any(not re.fullmatch(r"[A-Za-z0-9_.]+", t) for t in value):
            raise ValueError("module names such as q_proj, v_proj, or ['all']")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainingSpec:
        bad = sorted(set(self.extra) & _FORBIDDEN_EXTRA)
        if bad:
            raise ValueError(f"extra may not set {bad}: the job sets them")
        if self.deepspeed is not None and self.gpus < 1:
            raise ValueError("deepspeed needs at least one GPU")
        if self.method == "qlora" and self.deepspeed == "z3":
            raise ValueError("QLoRA with DeepSpeed ZeRO-3 is not supported by LLaMA-Factory")
        return self


class JobPaths(BaseModel):
    """Where one job's files are, as the trainer sees them (local disk or the pod's mounts)."""

    dataset_dir: str
    output_dir: str
    train_dataset: str
    eval_dataset: str | None = None
    deepspeed_config: str | None = None


def check_policy(spec: TrainingSpec, *, allow_full_finetune: bool, max_gpus: int) -> None:
    """What the platform profile allows, refused with a message a person can act on."""
    if spec.method == "full" and not allow_full_finetune:
        raise InvalidRequest(
            "full fine-tuning is not enabled on this platform profile "
            "(training.allow_full_finetune); use method lora or qlora"
        )
    if spec.gpus > max_gpus:
        raise InvalidRequest(f"a job may use at most {max_gpus} GPUs (asked for {spec.gpus})")


def llamafactory_config(
    spec: TrainingSpec,
    paths: JobPaths,
    *,
    run_name: str,
    template: str,
    resume_from_checkpoint: str | None = None,
    use_cpu: bool = False,
) -> dict[str, Any]:
    """The ``llamafactory-cli train`` arguments of ``spec`` (key order as in its examples)."""
    cfg: dict[str, Any] = {
        # model
        "model_name_or_path": spec.base_model,
        "trust_remote_code": False,  # no code from a model directory runs in the trainer
        # method
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full" if spec.method == "full" else "lora",
    }
    if spec.method != "full":
        cfg["lora_rank"] = spec.lora_rank
        cfg["lora_alpha"] = spec.lora_alpha or 2 * spec.lora_rank
        cfg["lora_dropout"] = spec.lora_dropout
        cfg["lora_target"] = ",".join(spec.lora_target)
    if spec.method == "qlora":
        cfg["quantization_bit"] = 4
        cfg["quantization_method"] = "bnb"
        cfg["double_quantization"] = True
    if paths.deepspeed_config:
        cfg["deepspeed"] = paths.deepspeed_config
    cfg.update(
        {
            # dataset
            "dataset_dir": paths.dataset_dir,
            "dataset": paths.train_dataset,
            "template": template,
            "cutoff_len": spec.cutoff_len,
            "preprocessing_num_workers": 1 if use_cpu else 8,
            "dataloader_num_workers": 0 if use_cpu else 2,
            # output
            "output_dir": paths.output_dir,
            "logging_steps": spec.logging_steps,
            "save_steps": spec.save_steps,
            "plot_loss": False,
            "overwrite_output_dir": False,  # a retry resumes from the checkpoints kept there
            "save_only_model": False,  # optimizer state too: resume needs it
            "report_to": "mlflow",
            "run_name": run_name,
            # train
            "per_device_train_batch_size": spec.per_device_train_batch_size,
            "gradient_accumulation_steps": spec.gradient_accumulation_steps,
            "learning_rate": spec.learning_rate,
            "num_train_epochs": spec.num_train_epochs,
            "lr_scheduler_type": spec.lr_scheduler_type,
            "warmup_ratio": spec.warmup_ratio,
            "seed": spec.seed,
            "ddp_timeout": 180000000,
        }
    )
    if spec.max_samples is not None:
        cfg["max_samples"] = spec.max_samples
    if spec.max_steps is not None:
        cfg["max_steps"] = spec.max_steps
    if spec.save_total_limit is not None:
        cfg["save_total_limit"] = spec.save_total_limit
    if spec.precision != "fp32" and not use_cpu:
        cfg[spec.precision] = True
    if use_cpu:
        cfg["use_cpu"] = True
    if paths.eval_dataset:
        cfg["eval_dataset"] = paths.eval_dataset
        cfg["per_device_eval_batch_size"] = spec.per_device_train_batch_size
        cfg["eval_strategy"] = "steps"
        cfg["eval_steps"] = spec.eval_steps or spec.save_steps
    cfg["resume_from_checkpoint"] = resume_from_checkpoint
    cfg.update(spec.extra)
    return cfg


def deepspeed_config(stage: DeepSpeedStage, precision: Precision) -> dict[str, Any]:
    """A ZeRO-2/3 config with ``auto`` values, as LLaMA-Factory's examples/deepspeed/ ship
    (the HF Trainer fills ``auto`` from the training arguments)."""
    zero: dict[str, Any] = {
        "stage": 2 if stage == "z2" else 3,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == "z2":
        zero.update(
            {"allgather_partitions": True, "allgather_bucket_size": 5e8, "reduce_scatter": True}
        )
    else:
        zero.update(
            {
                "sub_group_size": 1e9,
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_max_live_parameters": 1e9,
                "stage3_max_reuse_distance": 1e9,
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto" if precision == "fp16" else False,
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto" if precision == "bf16" else False},
        "zero_optimization": zero,
    }


def dataset_entries(dataset_dir: Path, name: str) -> tuple[str, str | None]:
    """The ``dataset_info.json`` keys of the train and validation files of ``name``.

    The dataset materializer writes ``<name>_train.json`` and ``<name>_val.json``; the keys are
    looked up by file name so that their spelling stays the dataset side's business.
    """
    import json

    info_path = dataset_dir / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"dataset {name!r}: unreadable {info_path.name}: {exc}") from exc
    by_file = {
        str(entry.get("file_name")): key for key, entry in info.items() if isinstance(entry, dict)
    }
    train = by_file.get(f"{name}_train.json")
    if train is None:
        raise InvalidRequest(
            f"dataset {name!r}: {info_path.name} has no entry for {name}_train.json"
        )
    return train, by_file.get(f"{name}_val.json")


def dump_yaml(cfg: dict[str, Any]) -> str:
    """The config as ``llamafactory-cli`` reads it (OmegaConf YAML; order kept)."""
    text: str = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    return text
