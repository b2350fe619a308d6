"""Training datasets: import (CSV, JSONL, Parquet, Dify logs and annotations), PII scrub,
LLaMA-Factory alpaca/sharegpt files, deduplication, a seeded split, a quality report,
immutable versions in the object store (logged to MLflow), diffs, and :func:`materialize`
for the training runners.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmflow.training.datasets.config import DatasetSettings
    from llmflow.training.datasets.service import DatasetService, materialize

# Lazy: ``llmflow.settings`` imports ``DatasetSettings`` from this package, and the service
# imports the storage layer, which imports ``llmflow.settings``.
_EXPORTS = {
    "DatasetService": "llmflow.training.datasets.service",
    "DatasetSettings": "llmflow.training.datasets.config",
    "materialize": "llmflow.training.datasets.service",
}
__all__ = ["DatasetService", "DatasetSettings", "materialize"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
