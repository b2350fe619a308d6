"""The runner interface: where a LLaMA-Factory training process runs.

One module per backend (``local``: a subprocess in ``.venv-train``; ``kubernetes``: a batch/v1
Job in the tenant namespace), chosen by ``settings.training.runner``. A runner knows nothing of
job records: the job service (``llmflow.training.jobs``) drives it through this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from llmflow.training.config import JobPaths


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


@dataclass(frozen=True, slots=True)
class RunStatus:
    state: RunState
    message: str = ""


@dataclass(slots=True)
class RunRequest:
    """One attempt of a job, ready to run.

    ``data_dir`` is the materialized dataset on this machine (``dataset_info.json`` and the
    files it names); ``config`` the LLaMA-Factory arguments with paths as the trainer sees
    them (:meth:`Runner.paths`); ``env`` the tracking variables (MLflow).
    """

    job_id: str
    tenant_id: str
    attempt: int
    data_dir: Path
    config: dict[str, Any]
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    deepspeed_config: dict[str, Any] | None = None


class Runner(ABC):
    """Start, observe, stream and stop a training process."""

    name: str
    use_cpu: bool = False
    """Whether the trainer runs without an accelerator (the config then says ``use_cpu``)."""

    @abstractmethod
    def paths(self, tenant_id: str, job_id: str, train: str, val: str | None) -> JobPaths:
        """Dataset, output and DeepSpeed config paths as the trainer sees them."""

    @abstractmethod
    async def start(self, request: RunRequest) -> str:
        """Start the attempt; return a handle that :meth:`status` and :meth:`cancel` accept
        from any process (a pid, a Job name)."""

    @abstractmethod
    async def status(self, tenant_id: str, handle: str) -> RunStatus: ...

    @abstractmethod
    def logs(self, tenant_id: str, handle: str, *, follow: bool) -> AsyncIterator[bytes]:
        """The trainer's output so far, and with ``follow`` until it ends."""

    @abstractmethod
    async def cancel(self, tenant_id: str, handle: str) -> None:
        """Stop the attempt (idempotent)."""

    @abstractmethod
    async def latest_checkpoint(self, tenant_id: str, job_id: str) -> str | None:
        """The newest ``checkpoint-N`` of the job's output, as the trainer sees it."""

    async def aclose(self) -> None:  # noqa: B027 - most runners hold nothing to release
        """Release clients."""
