"""Errors of the dataset stage; each is an :class:`~llmflow.errors.LLMFlowError` so the API
renders it as problem details and the CLI as one actionable line."""

from __future__ import annotations

from llmflow.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge


class DatasetFormatError(InvalidRequest):
    """The source cannot be read as a dataset: corrupt file, wrong type, missing column."""

    code = "dataset_invalid"
    title = "Invalid dataset"


class DatasetTooLarge(PayloadTooLarge):
    """The source is above a cap of ``Settings.datasets`` (bytes or rows)."""

    code = "dataset_too_large"
    title = "Dataset too large"


class DatasetNotFound(NotFound):
    code = "dataset_not_found"
    title = "Dataset not found"


class DatasetVersionExists(Conflict):
    """Versions are immutable: a name/version pair is written once."""

    code = "dataset_version_exists"
    title = "Dataset version exists"
