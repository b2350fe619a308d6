"""``llmflow tenant plan|apply|delete``: the tenant control plane from the command line.

Every command prints the plan — per system, each object with ``create``, ``update``,
``delete`` or ``unchanged`` — before it acts. ``--json`` prints one JSON document for CI.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmflow.errors import LLMFlowError
from llmflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from llmflow.tenancy.control_plane import ControlPlane, TenantPlan
    from llmflow.tenancy.spec import TenantSpec

T = TypeVar("T")

tenant_app = typer.Typer(
    help="Tenant control plane: reconcile the tenants declared in tenants.yaml into Keycloak, "
    "Kubernetes, OPA data, the object store, MLflow and Langfuse, or purge one tenant. "
    "Systems without settings are skipped (see `LLMFLOW_TENANCY__*`, `LLMFLOW_KEYCLOAK__*`).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

FileOpt = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        help="tenants.yaml (see platform/tenants.example.yaml)",
        exists=True,
        dir_okay=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the plan (and what was done) as one JSON document")
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="do not ask before deleting (required with --json)")
]

_STYLE = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim"}


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def _tenants(path: Path) -> list[TenantSpec]:
    from llmflow.tenancy.spec import load_tenants

    try:
        return load_tenants(path)
    except LLMFlowError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(2) from exc


def _run(body: Callable[[ControlPlane], Awaitable[T]], settings: Settings) -> T:
    """Build the control plane, run ``body``, close it; domain errors become one red line."""
    from llmflow.tenancy.control_plane import ControlPlane

    async def main() -> T:
        plane = ControlPlane.from_settings(settings)
        try:
            return await body(plane)
        finally:
            await plane.aclose()

    try:
        return asyncio.run(main())
    except LLMFlowError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(1) from exc


def print_plan(plan: TenantPlan, out: Console | None = None) -> None:
    """The plan for people: one table per system, skipped systems as one line, a summary."""
    out = out or console
    for system in plan.systems:
        if system.skipped:
            out.print(f"[dim]skipped: {escape(system.skipped)}[/dim]")
            continue
        table = Table(
            title=f"{system.system} → {escape(system.target)}",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("operation")
        table.add_column("kind")
        table.add_column("object", overflow="fold")
        table.add_column("tenant")
        table.add_column("detail", overflow="fold")
        for change in system.changes:
            style = _STYLE[change.operation.value]
            table.add_row(
                f"[{style}]{change.operation.value}[/{style}]",
                escape(change.kind),
                escape(change.name),
                escape(change.tenant or "-"),
                escape(change.detail),
            )
        if not system.changes:
            out.print(f"[bold]{system.system}[/bold] → {escape(system.target)}: nothing to do")
        else:
            out.print(table)
    counts = plan.counts()
    out.print(
        f"Plan: [green]{counts['create']} to create[/green], "
        f"[yellow]{counts['update']} to update[/yellow], "
        f"[red]{counts['delete']} to delete[/red], {counts['unchanged']} unchanged."
    )


def _confirm(question: str, yes: bool, as_json: bool) -> None:
    if yes:
        return
    if as_json:
        # JSON output is for CI: never wait for an answer nobody will type.
        err.print(f"[red]refusing:[/red] {escape(question)} Re-run with --yes to confirm.")
        raise typer.Exit(1)
    if not typer.confirm(question, default=False, err=True):
        err.print("aborted: nothing was changed")
        raise typer.Exit(1)


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


@tenant_app.command("plan")
def plan_cmd(file: FileOpt, as_json: JsonOpt = False) -> None:
    """Show what `tenant apply` would change in each system; changes nothing."""
    settings = _settings()
    tenants = _tenants(file)
    plan = _run(lambda plane: plane.plan(tenants), settings)
    if as_json:
        _emit({"plan": plan.to_dict()})
    else:
        print_plan(plan)


@tenant_app.command("apply")
def apply_cmd(
    file: FileOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan and stop; nothing is changed")
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Reconcile every configured system with the tenants of FILE.

    Prints the plan first. Creates and updates run straight away; a plan with deletes (a
    tenant or object no longer declared) asks for confirmation unless --yes. Kubernetes
    manifests are always rendered (to tenancy.manifests_dir) and applied with server-side
    apply when a cluster is configured. Running apply twice changes nothing the second time.
    """
    settings = _settings()
    tenants = _tenants(file)

    async def body(plane: ControlPlane) -> dict[str, Any]:
        plan = await plane.plan(tenants)
        if not as_json:
            print_plan(plan)
        result: dict[str, Any] = {"plan": plan.to_dict(), "dry_run": dry_run, "applied": []}
        if dry_run:
            if not as_json:
                console.print("dry run: nothing was changed")
            return result
        deletes = plan.counts()["delete"]
        if deletes:
            _confirm(f"The plan deletes {deletes} object(s).", yes, as_json)
        done = await plane.apply(plan)
        result["applied"] = [c.to_dict() for c in done]
        if not as_json:
            console.print(f"applied {len(done)} change(s)")
        return result

    result = _run(body, settings)
    if as_json:
        _emit(result)


@tenant_app.command("delete")
def delete_cmd(
    tenant: Annotated[str, typer.Argument(help="tenant name, e.g. dept-hr")],
    file: FileOpt,
    yes: YesOpt = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="delete even though FILE still declares the tenant"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Purge TENANT's data from every store and remove it from every system.

    Removes its knowledge bases, documents, chunks (Milvus), ingest jobs, API keys and
    object-store bucket, then its Keycloak group, namespace, OPA data, MLflow experiment and
    Langfuse project. Other tenants are untouched.

    Refuses while FILE still declares the tenant (remove it there first, or --force), and
    asks for confirmation unless --yes.
    """
    settings = _settings()
    declared = _tenants(file)
    if any(t.name == tenant for t in declared) and not force:
        err.print(
            f"[red]refusing:[/red] tenant {escape(tenant)!s} is still declared in {file}; "
            "remove it there first (or pass --force)"
        )
        raise typer.Exit(2)

    async def body(plane: ControlPlane) -> dict[str, Any]:
        plan = await plane.plan_delete(tenant, declared)
        if not as_json:
            console.print(
                f"Tenant [bold]{escape(tenant)}[/bold]: knowledge bases, documents, chunks, "
                "ingest jobs and API keys are purged from the data plane, then:"
            )
            print_plan(plan)
        _confirm(f"Purge every trace of tenant {tenant!r}? This cannot be undone.", yes, as_json)
        # The data plane's engines load only once the purge is confirmed.
        from llmflow.cli import quiet_third_party_logs
        from llmflow.runtime import Runtime
        from llmflow.tenancy.purge import purge_tenant_data

        quiet_third_party_logs()
        rt = await Runtime.open(settings)
        try:
            report = await purge_tenant_data(rt, tenant)
        finally:
            await rt.close()
        done = await plane.apply(plan)
        if not as_json:
            console.print(
                f"purged {len(report.knowledge_bases)} knowledge base(s), {report.documents} "
                f"document(s), {report.chunks} chunk(s), {report.api_keys} API key(s); "
                f"{len(done)} change(s) applied"
            )
        return {
            "plan": plan.to_dict(),
            "purged": report.to_dict(),
            "applied": [c.to_dict() for c in done],
        }

    result = _run(body, settings)
    if as_json:
        _emit(result)


def register(app: typer.Typer) -> None:
    """Add ``llmflow tenant`` to the main CLI."""
    app.add_typer(tenant_app, name="tenant")
