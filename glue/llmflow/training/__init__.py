"""Fine-tuning loop: datasets, training jobs, model registry, evaluation and deployment.

Modules (imported directly, not re-exported here: ``llmflow.settings`` imports
``training.settings`` and ``training.datasets.config``, so this package must stay import-light):
``config`` (TrainingSpec → LLaMA-Factory YAML), ``validate`` (LLaMA-Factory's own parser in
``.venv-train``), ``runners`` (local subprocess, Kubernetes Job), ``jobs`` (TrainingService),
``store`` (job records), ``registry`` (MLflow runs, versions, aliases), ``metrics`` and
``evaluate`` (harness), ``deploy`` (vLLM LoRA loading, gateway routes), ``datasets``.
See docs/training.md.
"""
