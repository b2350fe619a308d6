"""``llmflow apps …`` (the ERP facade's app registry) and ``llmflow dify offboard``.

* ``apps register --tenant T --name N --dify-app-key-file F --mode workflow|chat``: the Dify
  app key is read from a file (a mounted Secret: never on a command line or in shell
  history) and stored sealed; no command or API prints it again.
* ``apps list``, ``apps remove``, ``apps callback-secret`` (the per-tenant HMAC secret the
  ERP's receiver verifies callbacks with; ``--rotate`` replaces it).
* ``dify offboard --tenant T | --all-tenants [--dry-run]``: removes from the tenant's (every
  tenant's) Dify workspace every member Keycloak no longer entitles (mounted under the
  ``dify`` group by :func:`register_dify`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from llmflow.dify.facade import AppMode

apps_app = typer.Typer(
    help="Dify apps that ERP/intranet systems run through the REST facade.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(apps_app, name="apps")


def register_dify(dify_app: typer.Typer) -> None:
    """Mount ``offboard`` under an existing ``dify`` command group."""
    dify_app.command("offboard")(offboard)


@apps_app.command("register")
def register_app(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant id, e.g. dept-finance")],
    name: Annotated[str, typer.Option("--name", "-n", help="app name in /v1/apps/{name}/run")],
    dify_app_key_file: Annotated[
        Path, typer.Option(help="file holding the Dify app key (app-…)", exists=True)
    ],
    mode: Annotated[str, typer.Option(help="workflow | chat")],
    dify_url: Annotated[
        str | None,
        typer.Option(
            help="Dify API base URL (default: facade.default_dify_url, else the `dify` settings)"
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="what the app does, for operators")] = "",
) -> None:
    """Register (or re-register, rotating the key) a tenant's Dify app."""
    from llmflow.cli import console, run
    from llmflow.dify.facade import facade

    if mode not in ("workflow", "chat"):
        raise typer.BadParameter("--mode workflow|chat")
    key = dify_app_key_file.read_text().strip()

    async def go(rt: Any) -> dict[str, Any]:
        s = rt.settings
        # The wiring's per-tenant Dify (settings `dify`) unless a URL is given here.
        url = (
            dify_url
            or s.facade.default_dify_url
            or s.dify.base_url(tenant, s.tenancy.namespace_prefix + tenant)
        )
        app = await facade(rt).apps.register(
            tenant, name, cast("AppMode", mode), url.format(tenant=tenant), key, description
        )
        return app.to_dict()

    console.print_json(data=run(go))


@apps_app.command("list")
def list_apps(tenant: Annotated[str, typer.Option("--tenant", "-t")]) -> None:
    """The tenant's registered apps (never their keys)."""
    from llmflow.cli import run
    from llmflow.dify.facade import facade

    async def go(rt: Any) -> list[dict[str, Any]]:
        return [a.to_dict() for a in await facade(rt).apps.list(tenant)]

    sys.stdout.write(json.dumps(run(go), ensure_ascii=False, indent=2) + "\n")


@apps_app.command("remove")
def remove_app(
    tenant: Annotated[str, typer.Option("--tenant", "-t")],
    name: Annotated[str, typer.Option("--name", "-n")],
) -> None:
    """Forget an app and its sealed key (runs stay readable)."""
    from llmflow.cli import console, run
    from llmflow.dify.facade import facade

    async def go(rt: Any) -> bool:
        return await facade(rt).apps.remove(tenant, name)

    removed = run(go)
    console.print("removed" if removed else f"no app {name!r} in tenant {tenant!r}")
    if not removed:
        raise typer.Exit(1)


@apps_app.command("callback-secret")
def callback_secret(
    tenant: Annotated[str, typer.Option("--tenant", "-t")],
    rotate: Annotated[bool, typer.Option(help="replace the secret (old signatures fail)")] = False,
) -> None:
    """Print the tenant's callback signing secret (give it to the ERP's receiver)."""
    from llmflow.cli import run
    from llmflow.dify.facade import facade

    async def go(rt: Any) -> str:
        return await facade(rt).apps.callback_secret(tenant, rotate=rotate)

    sys.stdout.write(run(go) + "\n")


def offboard(
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="tenant whose Dify to reconcile")
    ] = None,
    all_tenants: Annotated[
        bool,
        typer.Option(
            "--all-tenants",
            help="every tenant of the Keycloak realm (/tenants/<tenant> groups) and every "
            "tenant with its own Dify configured; exits 1 if any failed, after trying all",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="only report what would change")] = False,
) -> None:
    """Remove Dify members Keycloak no longer entitles (disabled, deleted, out of the tenant
    group or without a mapped role) and align the others' roles."""
    import asyncio
    import logging

    from llmflow.cli import _settings, err, quiet_third_party_logs
    from llmflow.dify.sso import (
        KeycloakDirectory,
        WorkspaceOffboarding,
        configured_tenants,
        offboard_tenants,
    )
    from llmflow.errors import LLMFlowError

    if (tenant is None) == (not all_tenants):
        raise typer.BadParameter("give exactly one of --tenant T and --all-tenants")
    s = _settings()
    logging.basicConfig(
        level=s.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    quiet_third_party_logs()
    directory = KeycloakDirectory(s.keycloak)

    async def go() -> list[WorkspaceOffboarding]:
        # Offboarding reads Keycloak and calls Dify only: no Runtime (database) is opened.
        known = set(await directory.tenants()) | configured_tenants(s.dify_sso, s.dify)
        if tenant is not None and tenant not in known:
            known.add(tenant)
        results = await offboard_tenants(
            s.dify_sso,
            known,
            directory,
            dry_run=dry_run,
            dify=s.dify,
            namespace_prefix=s.tenancy.namespace_prefix,
            # --tenant: the workspace serving it (shared mode: with the tenants it shares).
            only_workspace_of=tenant,
        )
        return results

    try:
        results = asyncio.run(go())
    except LLMFlowError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    failed = sorted(t for r in results if r.failed for t in r.tenants)
    document: dict[str, Any] = {
        "dry_run": dry_run,
        "workspaces": [r.to_dict() for r in results],
        "failed": failed,
    }
    if tenant is not None:
        document = {"tenant": tenant, **document}
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    if failed:
        err.print(f"[red]offboarding failed for:[/red] {', '.join(failed)}")
        raise typer.Exit(1)
