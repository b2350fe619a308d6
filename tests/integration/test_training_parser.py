"""Generated LLaMA-Factory configs against LLaMA-Factory 0.9.5's real argument parser in the
training environment (``.venv-train``; skipped without it)."""

from __future__ import annotations

from typing import Any

import pytest
from training_harness import TRAIN_VENV, train_skip_reason

from llmflow.errors import InvalidRequest
from llmflow.training.config import JobPaths, TrainingSpec, llamafactory_config

pytestmark = pytest.mark.integration
PATHS = JobPaths(dataset_dir="/d", output_dir="/o", train_dataset="faq_train",
                 eval_dataset="faq_val")  # fmt: skip


def spec(**over: Any) -> TrainingSpec:
    data: dict[str, Any] = {"name": "faq-lora", "base_model": "/models/m",
                            "dataset": {"name": "faq", "version": "v3"}}  # fmt: skip
    data.update(over)
    return TrainingSpec.model_validate(data)


needs_train_env = pytest.mark.skipif(
    train_skip_reason() is not None, reason=train_skip_reason() or ""
)


@needs_train_env
async def test_generated_configs_pass_llamafactorys_parser() -> None:
    from llmflow.training.validate import validate_config

    for s in (spec(), spec(method="qlora", deepspeed="z2", gpus=2), spec(method="full",
              max_steps=10, extra={"neftune_noise_alpha": 5.0})):  # fmt: skip
        cfg = llamafactory_config(s, PATHS, run_name="r", template="qwen")
        if s.deepspeed:
            cfg["deepspeed"] = "/job/ds_config.json"
        check = await validate_config(cfg, TRAIN_VENV)
        assert check.hardware_checked is False  # no CUDA here: bf16/deepspeed left to the GPU


@needs_train_env
async def test_the_parser_refuses_unknown_and_ill_typed_arguments() -> None:
    from llmflow.training.validate import validate_config

    cfg = llamafactory_config(spec(extra={"lora_rnk": 16}), PATHS, run_name="r", template="qwen")
    with pytest.raises(InvalidRequest, match="lora_rnk"):
        await validate_config(cfg, TRAIN_VENV)
    cfg = llamafactory_config(spec(extra={"cutoff_len": "long"}), PATHS, run_name="r",
                              template="qwen")  # fmt: skip
    with pytest.raises(InvalidRequest, match=r"cutoff_len|invalid literal|long"):
        await validate_config(cfg, TRAIN_VENV)
    # a combination LLaMA-Factory's own __post_init__ refuses (DataArguments)
    cfg = llamafactory_config(spec(extra={"val_size": 0.1}), PATHS, run_name="r",
                              template="qwen")  # fmt: skip
    with pytest.raises(InvalidRequest, match="val_size"):
        await validate_config(cfg, TRAIN_VENV)
    # and one of FinetuningArguments: DoRA is a LoRA variant
    cfg = llamafactory_config(spec(method="full", extra={"use_dora": True}), PATHS,
                              run_name="r", template="qwen")  # fmt: skip
    with pytest.raises(InvalidRequest, match="use_dora"):
        await validate_config(cfg, TRAIN_VENV)
