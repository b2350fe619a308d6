"""The local runner's failure paths through ``TrainingService`` with the embedded PostgreSQL:
an attempt that fails is retried and resumes from the newest checkpoint, exhausted attempts
leave ``failed`` with the trainer's last words, logs stream from the file.

The trainer here is a stand-in ``llamafactory-cli`` script (it writes a checkpoint and fails,
then succeeds), so that these paths run in seconds; the real ``llamafactory-cli`` runs in
tests/e2e/test_finetune_loop.py (training, cancel, resume). The config check uses the real
LLaMA-Factory parser of ``.venv-train``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from training_harness import TRAIN_PYTHON, train_skip_reason, write_alpaca_dataset

from llmflow.training.config import DatasetRef, TrainingSpec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(train_skip_reason() is not None, reason=train_skip_reason() or ""),
]

FAKE_CLI = r"""#!/usr/bin/env bash
# stand-in for llamafactory-cli: attempt 1 checkpoints then dies, later attempts finish
set -u
cfg="$2"
out=$(grep '^output_dir:' "$cfg" | cut -d' ' -f2)
echo "fake trainer: $cfg"
if grep -q '^resume_from_checkpoint: null' "$cfg"; then
  mkdir -p "$out/checkpoint-2" && echo '{"global_step": 2}' > "$out/checkpoint-2/trainer_state.json"
  echo "RuntimeError: CUDA out of memory (simulated)" >&2
  exit 3
fi
grep '^resume_from_checkpoint:' "$cfg"
echo '{}' > "$out/adapter_config.json" && echo x > "$out/adapter_model.safetensors"
echo "Training completed."
"""


def fake_venv(root: Path, cli: str) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"  # the real training environment's parser checks configs
    python.write_text(f'#!/usr/bin/env bash\nexec "{TRAIN_PYTHON}" "$@"\n')
    os.chmod(python, 0o755)
    script = bin_dir / "llamafactory-cli"
    script.write_text(cli)
    os.chmod(script, 0o755)
    return root


async def materialize(rt: Any, tenant: str, name: str, version: str, dest: Path) -> Path:
    return write_alpaca_dataset(dest, name, version=version)


def spec() -> TrainingSpec:
    return TrainingSpec(name="faq", base_model="/models/m", gpus=0, template="qwen",
                        dataset=DatasetRef(name="faq", version="v1"))  # fmt: skip


async def test_a_failed_attempt_is_retried_from_its_checkpoint(
    runtime: Any, tmp_path: Path
) -> None:
    from llmflow.training import jobs as jobs_module
    from llmflow.training.jobs import TrainingService
    from llmflow.training.settings import TrainingSettings

    settings = TrainingSettings(work_dir=tmp_path / "work", max_attempts=2,
                                train_venv=fake_venv(tmp_path / "venv", FAKE_CLI))  # fmt: skip
    service = TrainingService(runtime, settings, materialize=materialize)
    jobs_module.POLL_S = 0.1
    try:
        job = await service.submit("loc-a", "u1", spec())
        done = await service.wait("loc-a", job.id, timeout_s=180)
        assert done.status.value == "succeeded", done.error
        assert done.attempt == 2 and done.config is not None
        out = Path(done.output_dir or "")
        assert (out.parent / "attempt-1.exit").read_text().strip() == "3"
        assert (out.parent / "attempt-2.exit").read_text().strip() == "0"
        log = b"".join([c async for c in service.logs("loc-a", job.id, follow=False)]).decode()
        assert "attempt 1 of job" in log and "attempt 2 of job" in log
        assert "CUDA out of memory (simulated)" in log
        assert f"resume_from_checkpoint: {out / 'checkpoint-2'}" in log
    finally:
        jobs_module.POLL_S = 1.0
        await service.aclose()


async def test_exhausted_attempts_fail_with_the_trainers_last_words(
    runtime: Any, tmp_path: Path
) -> None:
    from llmflow.training import jobs as jobs_module
    from llmflow.training.jobs import TrainingService
    from llmflow.training.settings import TrainingSettings

    settings = TrainingSettings(work_dir=tmp_path / "work", max_attempts=1,
                                train_venv=fake_venv(tmp_path / "venv", FAKE_CLI))  # fmt: skip
    service = TrainingService(runtime, settings, materialize=materialize)
    jobs_module.POLL_S = 0.1
    try:
        job = await service.submit("loc-b", "u1", spec())
        done = await service.wait("loc-b", job.id, timeout_s=180)
        assert done.status.value == "failed" and done.attempt == 1
        assert done.error is not None and "exited with 3" in done.error
        assert "CUDA out of memory (simulated)" in done.error
        retried = await service.retry("loc-b", job.id)
        assert retried.status.value == "queued"
        done = await service.wait("loc-b", job.id, timeout_s=180)
        assert done.status.value == "succeeded" and done.attempt == 2, done.error
    finally:
        jobs_module.POLL_S = 1.0
        await service.aclose()
