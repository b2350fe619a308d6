"""Training jobs: submit, supervise, retry with resume, cancel, stream logs, register.

A job's life: ``queued`` → the dataset is materialized into the job directory, the
LLaMA-Factory config generated and checked by LLaMA-Factory's own parser, an MLflow run opened
→ ``running`` (one runner attempt after another; an attempt after the first resumes from the
newest checkpoint) → ``succeeded`` (the adapter registered in MLflow as a new version with
alias ``candidate``), ``failed`` (attempts exhausted; the last error kept) or ``cancelled``.

Records live in PostgreSQL, so any process can read a job or ask to cancel it; the attempt's
handle (a pid, a Job name) lets another process stop it. The supervising task runs in the
process that accepted the job; :meth:`TrainingService.recover` picks up queued and running
jobs after a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmflow.errors import Conflict, InvalidRequest, ServiceUnavailable
from llmflow.training.config import (
    TrainingSpec,
    check_policy,
    dataset_entries,
    deepspeed_config,
    dump_yaml,
    llamafactory_config,
)
from llmflow.training.runners.base import Runner, RunRequest, RunState
from llmflow.training.settings import TrainingSettings
from llmflow.training.store import TrainingJob, TrainingJobStore, TrainingStatus

if TYPE_CHECKING:
    from llmflow.runtime import Runtime
    from llmflow.training.registry import ModelRegistry

log = logging.getLogger(__name__)
POLL_S = 1.0

Materializer = Callable[["Runtime", str, str, str, Path], Awaitable[Path]]
"""``(runtime, tenant_id, name, version, dest) -> dest``: writes a dataset version for
LLaMA-Factory (``llmflow.training.datasets.materialize`` unless another source is given)."""


def build_runner(runtime: Runtime, settings: TrainingSettings, work_dir: Path) -> Runner:
    """The runner ``settings.runner`` names."""
    if settings.runner == "kubernetes":
        from llmflow.tenancy.k8s_api import KubernetesApi
        from llmflow.training.runners.kubernetes import KubernetesRunner

        api = KubernetesApi.from_settings(runtime.settings.tenancy)
        if api is None:
            raise ServiceUnavailable(
                "training.runner is kubernetes but no cluster is configured "
                "(tenancy.kubernetes_api_url or tenancy.kubernetes_in_cluster)"
            )
        return KubernetesRunner(api, settings, runtime.settings.tenancy.namespace_prefix)
    from llmflow.training.runners.local import LocalRunner

    return LocalRunner(work_dir, settings.train_venv)


class TrainingService:
    """The fine-tuning jobs of every tenant, in one process."""

    def __init__(
        self,
        runtime: Runtime,
        settings: TrainingSettings,
        *,
        runner: Runner | None = None,
        registry: ModelRegistry | None = None,
        materialize: Materializer | None = None,
    ) -> None:
        self.runtime = runtime
        self._materialize = materialize
        self.settings = settings
        self.work_dir = (settings.work_dir or runtime.settings.data_dir / "training").resolve()
        self.runner = runner or build_runner(runtime, settings, self.work_dir)
        if registry is None and settings.mlflow_tracking_uri:
            from llmflow.training.registry import ModelRegistry

            registry = ModelRegistry(settings)
        self.registry = registry
        self.store = TrainingJobStore(runtime.sessions)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- public ---------------------------------------------------------------------
    async def submit(self, tenant_id: str, created_by: str, spec: TrainingSpec) -> TrainingJob:
        """Record the job and start supervising it in this process."""
        check_policy(
            spec,
            allow_full_finetune=self.settings.allow_full_finetune,
            max_gpus=self.settings.max_gpus_per_job,
        )
        job = await self.store.create(
            tenant_id, spec.name, self.runner.name, spec.model_dump(mode="json"), created_by,
            self.settings.max_attempts,
        )  # fmt: skip
        self._supervise(job.id)
        return job

    async def get(self, tenant_id: str, job_id: str) -> TrainingJob:
        return await self.store.get(tenant_id, job_id)

    async def recent(self, tenant_id: str, limit: int = 50) -> list[TrainingJob]:
        return await self.store.recent(tenant_id, limit)

    async def wait(
        self, tenant_id: str, job_id: str, timeout_s: float | None = None
    ) -> TrainingJob:
        """Until the job is finished (or ``timeout_s`` passes: the job as it is then)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            job = await self.store.get(tenant_id, job_id)
            if job.status.terminal or (deadline is not None and loop.time() > deadline):
                return job
            await asyncio.sleep(POLL_S)

    async def cancel(self, tenant_id: str, job_id: str) -> TrainingJob:
        """Ask the job to stop; the running attempt is terminated (idempotent)."""
        job = await self.store.get(tenant_id, job_id)
        if job.status.terminal:
            return job
        job = await self.store.update(job_id, cancel_requested=True)
        if job.handle:
            await self.runner.cancel(tenant_id, job.handle)
        if job_id not in self._tasks:  # supervised elsewhere, or not at all: settle it here
            job = await self.store.update(
                job_id, status=TrainingStatus.CANCELLED, finished_at=datetime.now(UTC)
            )
        return job

    async def retry(self, tenant_id: str, job_id: str) -> TrainingJob:
        """Run a failed or cancelled job again, one more attempt, resuming from its newest
        checkpoint."""
        job = await self.store.get(tenant_id, job_id)
        if job.status not in (TrainingStatus.FAILED, TrainingStatus.CANCELLED):
            raise Conflict(
                f"job {job_id} is {job.status.value}: only failed or cancelled jobs retry"
            )
        job = await self.store.update(
            job_id, status=TrainingStatus.QUEUED, cancel_requested=False, error=None,
            finished_at=None,
        )  # fmt: skip
        self._supervise(job_id, extra_attempts=1)
        return job

    async def logs(self, tenant_id: str, job_id: str, *, follow: bool) -> AsyncIterator[bytes]:
        """The trainer's output (every attempt); with ``follow`` until the job ends."""
        job = await self.store.get(tenant_id, job_id)
        while job.handle is None:
            if job.status.terminal or not follow:
                if job.error:
                    yield f"llmflow: {job.error}\n".encode()
                return
            await asyncio.sleep(POLL_S)
            job = await self.store.get(tenant_id, job_id)
        seen_handle = job.handle
        sent = 0  # the local runner's log is one file for every attempt: never repeat it
        while True:
            skip = sent if self.runner.name == "local" else 0
            async for chunk in self.runner.logs(tenant_id, seen_handle, follow=follow):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                    if not chunk:
                        continue
                sent += len(chunk)
                yield chunk
            if not follow:
                return
            job = await self.wait_for_change(tenant_id, job_id, seen_handle)
            if job.handle is None or job.handle == seen_handle:
                return
            seen_handle = job.handle

    async def wait_for_change(self, tenant_id: str, job_id: str, handle: str) -> TrainingJob:
        """Until the job has a new attempt or is finished."""
        while True:
            job = await self.store.get(tenant_id, job_id)
            if job.status.terminal or job.handle != handle:
                return job
            await asyncio.sleep(POLL_S)

    async def recover(self) -> int:
        """Supervise the queued and running jobs of a previous process (after a restart)."""
        jobs = [j for j in await self.store.active() if j.id not in self._tasks]
        for job in jobs:
            self._supervise(job.id)
        return len(jobs)

    async def aclose(self) -> None:
        """Stop supervising (the trainers keep running; :meth:`recover` resumes)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self.runner.aclose()

    # -- supervision ----------------------------------------------------------------
    def _supervise(self, job_id: str, extra_attempts: int = 0) -> None:
        task = asyncio.create_task(self._drive(job_id, extra_attempts), name=f"training-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    async def _drive(self, job_id: str, extra_attempts: int) -> None:
        try:
            await self._run(job_id, extra_attempts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the record must say why, whatever broke
            detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            log.exception("training job %s failed", job_id)
            await self.store.update(
                job_id, status=TrainingStatus.FAILED, error=str(detail)[:4000],
                finished_at=datetime.now(UTC),
            )  # fmt: skip
            await self._finish_run(job_id, "FAILED")

    async def _job(self, job_id: str) -> TrainingJob:
        from sqlalchemy import text

        async with self.runtime.sessions() as s:
            tenant = (
                await s.execute(
                    text("SELECT tenant_id FROM training_jobs WHERE id = :id"), {"id": job_id}
                )
            ).scalar_one()
        return await self.store.get(str(tenant), job_id)

    def job_dir(self, job: TrainingJob) -> Path:
        return self.work_dir / job.tenant_id / job.id

    async def _prepare(self, job: TrainingJob) -> TrainingJob:
        """Dataset, config (checked by LLaMA-Factory's parser), lineage, MLflow run."""
        from llmflow.training.registry import code_version

        spec = TrainingSpec.model_validate(job.spec)
        data_dir = self.job_dir(job) / "data"
        if not (data_dir / "dataset_info.json").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            materialize: Materializer
            if self._materialize is not None:
                materialize = self._materialize
            else:
                from llmflow.training.datasets import materialize  # the dataset side's entry
            await materialize(
                self.runtime, job.tenant_id, spec.dataset.name, spec.dataset.version, data_dir
            )
        manifest = _read_json(data_dir / "manifest.json")
        train, val = dataset_entries(data_dir, spec.dataset.name)
        paths = self.runner.paths(job.tenant_id, job.id, train, val)
        template = spec.template or self.settings.default_template
        config = llamafactory_config(
            spec, paths, run_name=f"{spec.name}-{job.id[:8]}", template=template,
            use_cpu=self.runner.use_cpu,
        )  # fmt: skip
        if (self.settings.train_venv / "bin" / "python").exists():
            from llmflow.training.validate import validate_config

            await validate_config(config, self.settings.train_venv)
        elif self.runner.name == "local":
            raise ServiceUnavailable(
                f"{self.settings.train_venv} is missing: run `bash .ci/train-env.sh`"
            )
        else:
            log.warning("training job %s: no local training environment to check the config "
                        "with; the trainer's parser checks it at start", job.id)  # fmt: skip
        lineage: dict[str, Any] = {
            "job_id": job.id,
            "dataset_name": spec.dataset.name,
            "dataset_version": spec.dataset.version,
            "dataset_sha256": _sha_of(manifest),
            "base_model": spec.base_model,
            "method": spec.method,
            "template": template,
            "code_version": code_version(self.settings),
        }
        run_id = job.mlflow_run_id
        if self.registry is not None and run_id is None:
            run_id = await self.registry.start_run(
                job.tenant_id, str(config["run_name"]), {"llmflow.job_id": job.id}
            )
            await self.registry.log_lineage(run_id, lineage, dump_yaml(config))
        return await self.store.update(
            job.id,
            config=config,
            lineage=lineage,
            output_dir=paths.output_dir,
            mlflow_run_id=run_id,
        )

    async def _run(self, job_id: str, extra_attempts: int) -> None:
        job = await self._job(job_id)
        if job.status.terminal:
            return
        if job.status is TrainingStatus.RUNNING and job.handle:
            # a previous process started this attempt: watch it rather than start another
            state = await self._watch(job, job.handle)
            if await self._settle(job, state, job.attempt):
                return
        if job.config is None:
            job = await self._prepare(job)
        spec = TrainingSpec.model_validate(job.spec)
        last_attempt = job.max_attempts + extra_attempts
        first = job.attempt + 1
        for attempt in range(first, last_attempt + 1):
            job = await self._job(job_id)
            if job.cancel_requested:
                await self._cancelled(job)
                return
            assert job.config is not None
            config = dict(job.config)
            if attempt > 1:
                config["resume_from_checkpoint"] = await self.runner.latest_checkpoint(
                    job.tenant_id, job.id
                )
            env: dict[str, str] = {}
            if self.registry is not None and job.mlflow_run_id:
                if attempt > 1:
                    job = await self._attempt_run(job, attempt, str(config["run_name"]))
                env = self.registry.trainer_env(job.tenant_id, job.mlflow_run_id or "")
            request = RunRequest(
                job_id=job.id,
                tenant_id=job.tenant_id,
                attempt=attempt,
                data_dir=self.job_dir(job) / "data",
                config=config,
                env=env,
                gpus=spec.gpus,
                deepspeed_config=deepspeed_config(spec.deepspeed, spec.precision)
                if spec.deepspeed else None,
            )  # fmt: skip
            handle = await self.runner.start(request)
            job = await self.store.update(
                job.id, status=TrainingStatus.RUNNING, attempt=attempt, handle=handle,
                started_at=job.started_at or datetime.now(UTC),
            )  # fmt: skip
            state = await self._watch(job, handle)
            if await self._settle(job, state, attempt, last_attempt):
                return

    async def _attempt_run(self, job: TrainingJob, attempt: int, run_name: str) -> TrainingJob:
        """A child MLflow run for a retry: MLflow refuses to change a logged parameter, and the
        trainer logs its arguments again (``resume_from_checkpoint`` now set). The job's
        ``mlflow_run_id`` follows the newest attempt (its metrics are the model's); the job's
        first run stays the parent, in ``lineage.mlflow_parent_run_id``."""
        assert self.registry is not None and job.mlflow_run_id is not None
        parent = str(job.lineage.get("mlflow_parent_run_id") or job.mlflow_run_id)
        await self._finish_run(job.id, "FAILED")  # the previous attempt's run, if still open
        run_id = await self.registry.start_run(
            job.tenant_id,
            f"{run_name}-attempt-{attempt}",
            {
                "mlflow.parentRunId": parent,
                "llmflow.job_id": job.id,
                "llmflow.attempt": str(attempt),
            },
        )
        return await self.store.update(
            job.id, mlflow_run_id=run_id, lineage={**job.lineage, "mlflow_parent_run_id": parent}
        )

    async def _watch(self, job: TrainingJob, handle: str) -> tuple[RunState, str]:
        cancel_sent = False
        while True:
            status = await self.runner.status(job.tenant_id, handle)
            if status.state.finished:
                return status.state, status.message
            current = await self.store.get(job.tenant_id, job.id)
            if current.cancel_requested and not cancel_sent:
                await self.runner.cancel(job.tenant_id, handle)
                cancel_sent = True
            await asyncio.sleep(POLL_S)

    async def _settle(
        self, job: TrainingJob, outcome: tuple[RunState, str], attempt: int,
        last_attempt: int | None = None,
    ) -> bool:  # fmt: skip
        """Record an attempt's end; True when the job is finished."""
        state, message = outcome
        current = await self.store.get(job.tenant_id, job.id)
        if state is RunState.CANCELLED or current.cancel_requested:
            await self._cancelled(current)
            return True
        if state is RunState.SUCCEEDED:
            await self._succeeded(current)
            return True
        last = current.max_attempts if last_attempt is None else last_attempt
        log.warning("training job %s attempt %d failed: %s", job.id, attempt, message)
        if attempt >= last:
            await self.store.update(
                job.id, status=TrainingStatus.FAILED, error=message[:4000],
                finished_at=datetime.now(UTC),
            )  # fmt: skip
            await self._finish_run(job.id, "FAILED")
            return True
        await self.store.update(job.id, error=f"attempt {attempt}: {message}"[:4000])
        return False

    async def _cancelled(self, job: TrainingJob) -> None:
        await self.store.update(
            job.id, status=TrainingStatus.CANCELLED, finished_at=datetime.now(UTC)
        )
        await self._finish_run(job.id, "KILLED")

    async def _succeeded(self, job: TrainingJob) -> None:
        version: str | None = None
        if self.registry is not None and job.mlflow_run_id:
            await self._finish_run(job.id, "FINISHED")
            local = self.runner.name == "local" and job.output_dir is not None
            spec = TrainingSpec.model_validate(job.spec)
            ref = await self.registry.register(
                job.tenant_id,
                spec.name,
                job.mlflow_run_id,
                Path(job.output_dir) if local and job.output_dir else None,
                self.lora_path(job),
                job.lineage,
            )
            version = ref.version
        await self.store.update(
            job.id, status=TrainingStatus.SUCCEEDED, error=None, model_version=version,
            finished_at=datetime.now(UTC),
        )  # fmt: skip

    def lora_path(self, job: TrainingJob) -> str:
        """The adapter directory as the vLLM replicas see it."""
        if self.settings.vllm_adapter_root and self.runner.name == "kubernetes":
            return f"{self.settings.vllm_adapter_root.rstrip('/')}/{job.id}/output"
        return job.output_dir or ""

    async def _finish_run(self, job_id: str, status: str) -> None:
        if self.registry is None:
            return
        job = await self._job(job_id)
        if job.mlflow_run_id:
            try:
                await self.registry.finish_run(job.mlflow_run_id, status)
            except ServiceUnavailable as exc:
                log.warning("MLflow run of job %s not closed: %s", job_id, exc.detail)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sha_of(manifest: dict[str, Any]) -> str:
    """The dataset version's content hash from its manifest (``sha256`` as a string, or a map
    of file → hash, folded into one)."""
    sha = manifest.get("sha256")
    if isinstance(sha, str):
        return sha
    if isinstance(sha, dict):
        return ",".join(f"{k}:{v}" for k, v in sorted(sha.items()))
    return "unknown"


_SERVICES: weakref.WeakKeyDictionary[Any, TrainingService] = weakref.WeakKeyDictionary()


def training_service(runtime: Runtime) -> TrainingService:
    """The process' training service of ``runtime`` (one per runtime, so that the tasks
    supervising jobs are not duplicated)."""
    service = _SERVICES.get(runtime)
    if service is None:
        settings = getattr(runtime.settings, "training", None)
        if settings is None:
            raise InvalidRequest("settings.training is missing")
        service = TrainingService(runtime, settings)
        _SERVICES[runtime] = service
    return service


def install_training_service(runtime: Runtime, service: TrainingService) -> None:
    """Use ``service`` for ``runtime`` (e.g. one with another dataset source or runner)."""
    _SERVICES[runtime] = service
