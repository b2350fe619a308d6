"""LLaMA-Factory config generation (checked against its real parser in
tests/integration/test_training_parser.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from training_harness import write_alpaca_dataset

from llmflow.errors import InvalidRequest
from llmflow.training.config import (
    DatasetRef,
    JobPaths,
    TrainingSpec,
    check_policy,
    dataset_entries,
    deepspeed_config,
    dump_yaml,
    llamafactory_config,
)

PATHS = JobPaths(dataset_dir="/d", output_dir="/o", train_dataset="faq_train",
                 eval_dataset="faq_val")  # fmt: skip


def spec(**over: Any) -> TrainingSpec:
    data: dict[str, Any] = {"name": "faq-lora", "base_model": "/models/m",
                            "dataset": {"name": "faq", "version": "v3"}}  # fmt: skip
    data.update(over)
    return TrainingSpec.model_validate(data)


def test_lora_config_has_the_example_keys_and_our_tracking() -> None:
    cfg = llamafactory_config(spec(lora_target=["q_proj", "v_proj"]), PATHS, run_name="r1",
                              template="qwen")  # fmt: skip
    assert cfg["stage"] == "sft" and cfg["do_train"] is True
    assert cfg["finetuning_type"] == "lora" and cfg["lora_target"] == "q_proj,v_proj"
    assert cfg["lora_rank"] == 8 and cfg["lora_alpha"] == 16
    assert cfg["report_to"] == "mlflow" and cfg["run_name"] == "r1"
    assert cfg["dataset"] == "faq_train" and cfg["eval_dataset"] == "faq_val"
    assert cfg["eval_strategy"] == "steps" and cfg["bf16"] is True
    assert cfg["trust_remote_code"] is False and cfg["overwrite_output_dir"] is False
    assert "quantization_bit" not in cfg and "deepspeed" not in cfg
    assert yaml.safe_load(dump_yaml(cfg)) == cfg
    assert next(iter(cfg)) == "model_name_or_path"


def test_qlora_full_cpu_and_deepspeed() -> None:
    q = llamafactory_config(spec(method="qlora"), PATHS, run_name="r", template="t")
    assert q["quantization_bit"] == 4 and q["quantization_method"] == "bnb"
    full = llamafactory_config(spec(method="full"), PATHS, run_name="r", template="t")
    assert full["finetuning_type"] == "full" and "lora_rank" not in full
    cpu = llamafactory_config(spec(), PATHS, run_name="r", template="t", use_cpu=True)
    assert cpu["use_cpu"] is True and "bf16" not in cpu
    z3 = deepspeed_config("z3", "bf16")
    assert z3["zero_optimization"]["stage"] == 3 and z3["bf16"]["enabled"] == "auto"
    assert deepspeed_config("z2", "fp16")["fp16"]["enabled"] == "auto"


def test_spec_refuses_what_would_escape_the_job() -> None:
    with pytest.raises(ValueError, match="extra may not set"):
        spec(extra={"output_dir": "/etc"})
    with pytest.raises(ValueError, match="lowercase"):
        spec(name="Bad_Name")
    with pytest.raises(ValueError, match="module names"):
        spec(lora_target=["q_proj; rm -rf /"])
    with pytest.raises(ValueError, match="ZeRO-3"):
        spec(method="qlora", deepspeed="z3")


def test_profile_policy() -> None:
    with pytest.raises(InvalidRequest, match="allow_full_finetune"):
        check_policy(spec(method="full"), allow_full_finetune=False, max_gpus=8)
    check_policy(spec(method="full"), allow_full_finetune=True, max_gpus=8)
    with pytest.raises(InvalidRequest, match="at most 2 GPUs"):
        check_policy(spec(gpus=4), allow_full_finetune=False, max_gpus=2)


def test_dataset_entries_are_found_by_file_name(tmp_path: Path) -> None:
    write_alpaca_dataset(tmp_path, "faq")
    assert dataset_entries(tmp_path, "faq") == ("faq_train", "faq_val")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    info = {"renamed": info["faq_train"]}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    assert dataset_entries(tmp_path, "faq") == ("renamed", None)
    with pytest.raises(InvalidRequest, match=r"no entry for other_train\.json"):
        dataset_entries(tmp_path, "other")


async def test_a_missing_training_environment_is_a_clear_503(tmp_path: Path) -> None:
    from llmflow.errors import ServiceUnavailable
    from llmflow.training.validate import validate_config

    with pytest.raises(ServiceUnavailable, match=r"train-env\.sh"):
        await validate_config({}, tmp_path / "nope")


def test_dataset_ref_is_strict() -> None:
    with pytest.raises(ValueError):
        DatasetRef.model_validate({"name": "x", "version": "1", "path": "/etc"})


def test_the_cli_offers_the_whole_loop() -> None:
    import typer
    from typer.testing import CliRunner

    from llmflow.commands_train import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for command in ("submit", "status", "logs", "cancel", "register", "evaluate", "deploy",
                    "promote", "rollback"):  # fmt: skip
        assert command in result.output
    bad = CliRunner().invoke(app, ["train", "submit", "-t", "x", "--name", "Bad_Name",
                                   "--base-model", "/m", "--dataset", "d@v1"])  # fmt: skip
    assert bad.exit_code == 2 and "lowercase" in bad.output
