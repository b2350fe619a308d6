#!/usr/bin/env bash
# .venv-train/: LLaMA-Factory (fine-tuning) and a full MLflow (tracking server + the
# `report_to: mlflow` callback inside training) in their OWN environment. Never installed into
# .venv: llamafactory pins transformers <=5.6, peft 0.18 and accelerate <=1.11, which neither the
# workspace lock nor .venv-vllm (transformers 5.19) may inherit.
#
# Idempotent: a stamp records what was installed; when it matches, this exits at once.
#   bash .ci/train-env.sh            # create or refresh
#   FORCE=1 bash .ci/train-env.sh    # recreate from scratch
#
# What goes in (and what is left out, on purpose):
#   - llamafactory 0.9.5 (its SFT/LoRA trainer and the `llamafactory-cli` entry point),
#     torch 2.13.0+cpu from the local wheel in /opt/wheels (PyPI has no +cpu build),
#     mlflow (full: server and client) and psycopg2-binary for MLflow's PostgreSQL backend.
#   - torchvision and torchaudio are hard deps of llamafactory used only by its multimodal
#     plugins; PyPI's builds do not load beside the CPU torch, so they are dropped with uv
#     overrides whose marker never matches. LLaMA-Factory imports `torchaudio` unconditionally
#     from its multimodal plugin module, so a tiny shim module named `torchaudio` is written
#     into site-packages: importing it works, using it raises ImportError with the reason.
#   - bitsandbytes (QLoRA) is not installed: it needs CUDA. QLoRA configs are generated and
#     validated, and run on the GPU image (kubernetes runner).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LLMFLOW_TRAIN_VENV:-.venv-train}
STAMP="$VENV/.llmflow-train-env"
LLAMAFACTORY_VERSION=0.9.5
MLFLOW_VERSION=3.17.2
TORCH_VERSION=2.13.0
PSYCOPG2_VERSION=2.9.11
WHEELS=${LLMFLOW_WHEELS:-/opt/wheels}

source .ci/cpu-venv.sh
torch_cpu_requirements train-env 1
want="llamafactory==$LLAMAFACTORY_VERSION mlflow==$MLFLOW_VERSION psycopg2-binary==$PSYCOPG2_VERSION $torch_req shim=1 | $(echo "$overrides" | tr '\n' ';')"

if venv_is_current "$want"; then
  echo "train-env: $VENV is up to date (llamafactory $LLAMAFACTORY_VERSION, mlflow $MLFLOW_VERSION)"
  exit 0
fi

start=$(date +%s)
venv_install "llamafactory==$LLAMAFACTORY_VERSION" "mlflow==$MLFLOW_VERSION" \
  "psycopg2-binary==$PSYCOPG2_VERSION" "$torch_req"

# The torchaudio shim: LLaMA-Factory's mm_plugin imports torchaudio at module import time, for
# audio models only. Text SFT never calls it; a call says plainly why it cannot work here.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/torchaudio"
cat >"$site/torchaudio/__init__.py" <<'PY'
"""LLMFlow shim: torchaudio is left out of .venv-train (no CPU build beside torch+cpu).

LLaMA-Factory imports it for audio models only; text fine-tuning never touches it."""

__version__ = "0.0.0+llmflow.shim"


def __getattr__(name: str) -> object:
    raise ImportError(
        f"torchaudio.{name}: torchaudio is a shim in .venv-train (audio models are unsupported)"
    )
PY

# Smoke: the packages import, the CLI resolves, the torch is the one we asked for.
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers, peft, mlflow, psycopg2  # noqa: F401
from llamafactory.hparams import get_train_args  # noqa: F401
print("train-env:", ", ".join(f"{p} {md.version(p)}" for p in
      ("llamafactory", "torch", "transformers", "peft", "trl", "mlflow", "psycopg2-binary")))
PY
"$VENV/bin/llamafactory-cli" version >/dev/null
echo "$want" >"$STAMP"
echo "train-env: $VENV ready in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
