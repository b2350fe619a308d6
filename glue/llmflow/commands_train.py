"""``llmflow train ...``: fine-tuning jobs, the MLflow registry, evaluation and deployment.

The CLI runs with the operator's authority on the install host (as ``llmflow tenant`` does):
``--tenant`` names the tenant. ``submit`` supervises the job in this process, so it waits for
the job to end (streaming its log); ``--detach`` leaves it to ``llmflow serve`` (which picks up
queued jobs through ``TrainingService.recover``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

train_app = typer.Typer(
    help="Fine-tuning: LLaMA-Factory jobs, MLflow registry, evaluation, vLLM deployment.",
    no_args_is_help=True,
)
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant id, e.g. dept-hr")]
NameOpt = Annotated[str, typer.Option("--name", "-n", help="adapter name (the job's spec.name)")]


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _spec(path: Path | None, overrides: dict[str, Any]) -> Any:
    from llmflow.training.config import TrainingSpec

    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{path}: expected a mapping (a TrainingSpec)")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainingSpec.model_validate(data)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@train_app.command("submit")
def submit(
    tenant: TenantOpt,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="TrainingSpec as YAML/JSON")
    ] = None,
    name: Annotated[str | None, typer.Option(help="adapter name")] = None,
    base_model: Annotated[str | None, typer.Option(help="base model directory or id")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset as NAME@VERSION")] = None,
    method: Annotated[str | None, typer.Option(help="lora | qlora | full")] = None,
    template: Annotated[str | None, typer.Option(help="LLaMA-Factory template")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N steps")] = None,
    detach: Annotated[bool, typer.Option(help="record and return at once")] = False,
) -> None:
    """Submit a LoRA/QLoRA (or full, where allowed) fine-tuning job and follow it."""
    from llmflow.cli import run
    from llmflow.training.jobs import training_service

    ds = None
    if dataset is not None:
        ds_name, _, ds_version = dataset.partition("@")
        ds = {"name": ds_name, "version": ds_version or "latest"}
    spec = _spec(
        spec_file,
        {"name": name, "base_model": base_model, "dataset": ds, "method": method,
         "template": template, "max_steps": max_steps},
    )  # fmt: skip

    async def go(rt: Any) -> dict[str, Any]:
        service = training_service(rt)
        job = await service.submit(tenant, "cli:operator", spec)
        if detach:
            await service.aclose()
            return job.to_dict()
        async for chunk in service.logs(tenant, job.id, follow=True):
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
        done = await service.wait(tenant, job.id)
        await service.aclose()
        return done.to_dict()

    result = run(go)
    _print(result)
    if result["status"] not in ("succeeded", "queued"):
        raise typer.Exit(1)


@train_app.command("status")
def status(tenant: TenantOpt, job_id: Annotated[str, typer.Argument()]) -> None:
    """A job's status, attempts, config, lineage, MLflow run and registered version."""
    from llmflow.cli import run
    from llmflow.training.store import TrainingJobStore

    async def go(rt: Any) -> dict[str, Any]:
        return (await TrainingJobStore(rt.sessions).get(tenant, job_id)).to_dict()

    _print(run(go))


@train_app.command("logs")
def logs(
    tenant: TenantOpt,
    job_id: Annotated[str, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
) -> None:
    """The trainer's output."""
    from llmflow.cli import run
    from llmflow.training.jobs import training_service

    async def go(rt: Any) -> None:
        service = training_service(rt)
        async for chunk in service.logs(tenant, job_id, follow=follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()

    run(go)


@train_app.command("cancel")
def cancel(tenant: TenantOpt, job_id: Annotated[str, typer.Argument()]) -> None:
    """Stop a job (terminates the running attempt)."""
    from llmflow.cli import run
    from llmflow.training.jobs import training_service

    async def go(rt: Any) -> dict[str, Any]:
        return (await training_service(rt).cancel(tenant, job_id)).to_dict()

    _print(run(go))


@train_app.command("register")
def register_job(tenant: TenantOpt, job_id: Annotated[str, typer.Argument()]) -> None:
    """Register a succeeded job's adapter in MLflow (alias ``candidate``), when the job
    ran without MLflow or its registration failed."""
    from llmflow.cli import run
    from llmflow.errors import InvalidRequest
    from llmflow.training.config import TrainingSpec
    from llmflow.training.jobs import training_service

    async def go(rt: Any) -> dict[str, Any]:
        service = training_service(rt)
        job = await service.get(tenant, job_id)
        if job.status.value != "succeeded" or not job.output_dir:
            raise InvalidRequest(f"job {job_id} is {job.status.value}: nothing to register")
        if service.registry is None:
            raise InvalidRequest("training.mlflow_tracking_uri is not set")
        run_id = job.mlflow_run_id or await service.registry.start_run(
            tenant, job.name, {"llmflow.job_id": job.id}
        )
        spec = TrainingSpec.model_validate(job.spec)
        local = Path(job.output_dir) if service.runner.name == "local" else None
        ref = await service.registry.register(
            tenant, spec.name, run_id, local, service.lora_path(job), job.lineage
        )
        await service.store.update(job.id, model_version=ref.version, mlflow_run_id=run_id)
        return ref.to_dict()

    _print(run(go))


def _registry(rt: Any) -> Any:
    from llmflow.training.registry import ModelRegistry

    return ModelRegistry(rt.settings.training)


@train_app.command("promote")
def promote(
    tenant: TenantOpt,
    name: NameOpt,
    version: Annotated[str | None, typer.Option(help="default: the candidate")] = None,
) -> None:
    """Make a version (default: ``candidate``) the ``champion``."""
    from llmflow.cli import run

    async def go(rt: Any) -> dict[str, Any]:
        reg = _registry(rt)
        ref = await reg.promote(reg.model_name(tenant, name), version)
        out: dict[str, Any] = ref.to_dict()
        return out

    _print(run(go))


@train_app.command("rollback")
def rollback(
    tenant: TenantOpt,
    name: NameOpt,
    redeploy: Annotated[
        str | None, typer.Option(help="also redeploy the champion on this base model")
    ] = None,
) -> None:
    """Point ``champion`` back at the version it replaced (and redeploy it)."""
    from llmflow.cli import run
    from llmflow.training.deploy import AdapterDeployer
    from llmflow.training.registry import LORA_PATH_TAG

    async def go(rt: Any) -> dict[str, Any]:
        reg = _registry(rt)
        model = reg.model_name(tenant, name)
        ref = await reg.rollback(model)
        out: dict[str, Any] = ref.to_dict()
        if redeploy:
            route = await AdapterDeployer(rt).deploy(
                tenant, name, redeploy, ref.tags[LORA_PATH_TAG], model, ref.version, "champion"
            )
            out["deployed"] = route.name
        return out

    _print(run(go))


@train_app.command("deploy")
def deploy(
    tenant: TenantOpt,
    name: NameOpt,
    base_model: Annotated[str, typer.Option(help="gateway model the adapter runs on")],
    version: Annotated[str, typer.Option(help="version number or alias")] = "champion",
) -> None:
    """Load the adapter into every vLLM replica of the base model and route
    ``<tenant>/<name>`` to it through the gateway."""
    from llmflow.cli import run
    from llmflow.training.deploy import AdapterDeployer
    from llmflow.training.registry import LORA_PATH_TAG

    async def go(rt: Any) -> dict[str, Any]:
        reg = _registry(rt)
        model = reg.model_name(tenant, name)
        ref = await reg.resolve(model, version)
        route = await AdapterDeployer(rt).deploy(
            tenant, name, base_model, ref.tags[LORA_PATH_TAG], model, ref.version,
            None if version.isdigit() else version,
        )  # fmt: skip
        return {"model": route.name, "version": route.version, "lora_path": route.lora_path}

    _print(run(go))


@train_app.command("evaluate")
def evaluate(
    tenant: TenantOpt,
    gateway_url: Annotated[str, typer.Option(help="the gateway's base URL (without /v1)")],
    api_key: Annotated[str, typer.Option(envvar="LLMFLOW_API_KEY", help="a key with 'model'")],
    model: Annotated[str, typer.Option(help="model to evaluate (e.g. the adapter)")],
    eval_file: Annotated[Path, typer.Option("--data", help="alpaca JSON (e.g. <name>_val.json)")],
    out: Annotated[Path, typer.Option(help="directory for JSONL/CSV/Parquet results")],
    baseline: Annotated[str | None, typer.Option(help="compare against this model")] = None,
    judge: Annotated[str | None, typer.Option(help="LLM-as-judge model")] = None,
    limit: Annotated[int | None, typer.Option(help="first N examples")] = None,
    log_mlflow: Annotated[bool, typer.Option(help="log metrics and files to MLflow")] = True,
) -> None:
    """Rule-based metrics (+ judge) of a model, optionally compared with a baseline."""
    from llmflow.cli import run

    async def go(rt: Any) -> dict[str, Any]:
        import httpx

        from llmflow.training.evaluate import (
            GatewayChat,
            compare,
            comparison_markdown,
            evaluate_model,
            load_alpaca,
            write_results,
        )

        examples = load_alpaca(eval_file, limit)
        async with httpx.AsyncClient(base_url=gateway_url, timeout=300) as client:
            chat = GatewayChat(client, {"Authorization": f"Bearer {api_key}"})
            reports = [await evaluate_model(chat, model, examples, judge_model=judge)]
            if baseline:
                reports.append(await evaluate_model(chat, baseline, examples, judge_model=judge))
        files: list[Path] = []
        for i, rep in enumerate(reports):
            files += write_results(rep, out, "candidate" if i == 0 else "baseline")
        result: dict[str, Any] = {"metrics": {r.model: r.metrics for r in reports}}
        if baseline:
            cmp = compare(reports[1], reports[0])
            (out / "comparison.json").write_text(json.dumps(cmp, indent=2, ensure_ascii=False))
            (out / "comparison.md").write_text(comparison_markdown(cmp))
            files += [out / "comparison.json", out / "comparison.md"]
            result["comparison"] = cmp
        if log_mlflow:
            metrics = {f"eval_{k}": v for k, v in reports[0].metrics.items()}
            run_id = await _registry(rt).log_evaluation(
                tenant, f"eval-{model.replace('/', '-')}", metrics, files,
                {"llmflow.model": model, "llmflow.baseline": baseline or ""},
            )  # fmt: skip
            result["mlflow_run_id"] = run_id
        return result

    _print(run(go))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")


__all__ = ["register", "train_app"]
