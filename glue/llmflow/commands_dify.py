"""``llmflow dify sync|plan``: wire tenants' Dify workspaces to LLMFlow (idempotent).

``sync`` observes each tenant's workspace, prints the plan (external knowledge API,
external datasets, models, custom tools, apps — ``create``/``update``/``delete``/
``unchanged``) and applies it; ``--dry-run`` and ``plan`` stop after printing. Secrets (the
Dify admin key, LLMFlow keys) never appear in the output. The ``dify`` group also carries the
commands other modules mount on it (``offboard``, ``plugins``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from llmflow.errors import LLMFlowError
from llmflow.settings import Settings, load_settings

dify_app = typer.Typer(
    help="Dify as the application OS: wire tenants' workspaces (external knowledge, models, "
    "tools, app templates). Settings: LLMFLOW_DIFY__* (mode, admin key, workspace ids).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

TenantOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tenant",
        "-t",
        help="tenant to wire (repeatable); default: every tenant of LLMFLOW_DIFY__WORKSPACE_IDS",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON document for CI")]
ToolsOpt = Annotated[
    str | None,
    typer.Option(
        "--tools-openapi",
        help="URL or file of LLMFlow's tools OpenAPI document (default: dify.tools_openapi)",
    ),
]


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


async def _sync(
    settings: Settings, tenants: list[str], dry_run: bool, as_json: bool
) -> dict[str, Any]:
    from llmflow.cli import quiet_third_party_logs
    from llmflow.commands_tenant import print_plan
    from llmflow.dify.wiring import build_config, build_sync
    from llmflow.runtime import Runtime
    from llmflow.tenancy.control_plane import SystemPlan, TenantPlan
    from llmflow.tenancy.k8s_manifests import namespace_of

    dify = settings.dify
    dify.check_licence()
    config = build_config(dify)
    quiet_third_party_logs()
    rt = await Runtime.open(settings)
    result: dict[str, Any] = {"mode": dify.mode, "dry_run": dry_run, "tenants": {}}
    try:
        for tenant in tenants:
            namespace = namespace_of(tenant, settings.tenancy.namespace_prefix)
            sync = build_sync(
                dify, tenant, namespace, rt.api_keys, rt.knowledge_bases, config=config
            )
            if sync is None:
                reason = (
                    "no Dify admin key (LLMFLOW_DIFY__ADMIN_API_KEY or _FILE)"
                    if dify.admin_key() is None
                    else f"no workspace id for {tenant} (LLMFLOW_DIFY__WORKSPACE_IDS)"
                )
                result["tenants"][tenant] = {"skipped": reason}
                if not as_json:
                    err.print(f"[yellow]skipped {escape(tenant)}:[/yellow] {escape(reason)}")
                continue
            try:
                plan, done = await sync.sync(dry_run=dry_run)
            finally:
                await sync.target.api.console.aclose()
            target = dify.base_url(tenant, namespace)
            if not as_json:
                print_plan(TenantPlan([SystemPlan(f"dify:{tenant}", target, plan)]), console)
                if not dry_run:
                    console.print(f"applied {len(done)} change(s) for {escape(tenant)}")
            result["tenants"][tenant] = {
                "target": target,
                "plan": [c.to_dict() for c in plan],
                "applied": [c.to_dict() for c in done],
            }
    finally:
        await rt.close()
    return result


def _run(tenants: list[str] | None, dry_run: bool, as_json: bool, tools: str | None) -> None:
    from llmflow.dify.client import DifyError

    settings = _settings()
    if tools:
        settings.dify.tools_openapi = tools
    names = tenants or sorted(settings.dify.workspace_ids)
    if not names and settings.dify.mode == "shared":
        err.print("[red]error:[/red] name the tenants to wire (--tenant) in shared mode")
        raise typer.Exit(2)
    if not names:
        err.print("[red]error:[/red] no tenant: pass --tenant or set LLMFLOW_DIFY__WORKSPACE_IDS")
        raise typer.Exit(2)
    try:
        result = asyncio.run(_sync(settings, names, dry_run, as_json))
    except DifyError as exc:
        err.print(f"[red]Dify refused:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    except LLMFlowError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(2 if exc.status == 500 else 1) from exc
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    elif dry_run:
        console.print("dry run: nothing was changed")


@dify_app.command("sync")
def sync_cmd(
    tenant: TenantOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan and stop; nothing is changed")
    ] = False,
    as_json: JsonOpt = False,
    tools_openapi: ToolsOpt = None,
) -> None:
    """Wire each tenant's Dify workspace to LLMFlow; a second run changes nothing."""
    _run(tenant, dry_run, as_json, tools_openapi)


@dify_app.command("plan")
def plan_cmd(
    tenant: TenantOpt = None, as_json: JsonOpt = False, tools_openapi: ToolsOpt = None
) -> None:
    """Show what `dify sync` would change in each tenant's workspace."""
    _run(tenant, True, as_json, tools_openapi)


def register(app: typer.Typer) -> None:
    """Add ``llmflow dify`` (with the commands other modules mount on it) to the CLI."""
    from llmflow import commands_apps, commands_dify_plugins

    commands_apps.register_dify(dify_app)
    commands_dify_plugins.register(dify_app)
    app.add_typer(dify_app, name="dify")
