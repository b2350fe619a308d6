"""Settings of the dataset stage of the fine-tuning loop (``Settings.datasets``).

Kept free of imports from the rest of ``llmflow``: ``llmflow.settings`` imports this model.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class DatasetSettings(BaseModel):
    """Limits and defaults of ``llmflow dataset import`` and ``POST /v1/datasets``.

    The caps exist because a dataset is read, scrubbed and held in memory whole before it is
    versioned: a file above them is refused with a message naming the cap, never truncated.
    """

    max_file_bytes: int = Field(
        default=512 * 1024 * 1024, description="larger source files are refused"
    )
    max_rows: int = Field(default=500_000, description="sources with more rows are refused")
    max_field_chars: int = Field(
        default=200_000, description="a text field longer than this rejects its row"
    )
    val_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="share of examples in the validation split"
    )
    split_seed: int = Field(default=42, description="seed of the train/validation split")
    pii_classification: str = Field(
        default="internal",
        description="classification the PII policy is applied with when the import names none",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI for dataset runs; default: tenancy.mlflow_url",
    )
    dify_page_limit: int = Field(
        default=100, ge=1, le=100, description="page size of Dify list calls (Dify caps at 100)"
    )
