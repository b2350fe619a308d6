"""``llmflow dify plugins install <dir>``: install the bundle's re-signed Dify plugins.

Mounted under the ``dify`` command group (``dify_app.add_typer(plugins_app, name="plugins")``
or :func:`register`). The directory is a bundle's ``dify-plugins/`` (its ``index.json`` names
every package and the unique identifier the plugin daemon must answer for it). The console is
reached with Dify's admin API key acting as the owner of one workspace; the key is read from a
file (a mounted Secret) so it never appears in a process listing or shell history.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llmflow.dify.client import DifyConsole
from llmflow.dify.plugins import InstallReport, PluginInstaller, PluginInstallError

plugins_app = typer.Typer(
    help="Dify plugins shipped offline: install the bundle's re-signed packages.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def register(dify_app: typer.Typer) -> None:
    """Mount ``plugins`` under an existing ``dify`` command group."""
    dify_app.add_typer(plugins_app, name="plugins")


async def _install(
    directory: Path, url: str, key: str, workspace: str, timeout: float, interval: float
) -> InstallReport:
    api = DifyConsole.with_admin_key(url, key, workspace)
    try:
        installer = PluginInstaller(api, timeout_s=timeout, poll_interval_s=interval)
        return await installer.install_directory(directory)
    finally:
        await api.aclose()


@plugins_app.command("install")
def install(
    directory: Annotated[
        Path,
        typer.Argument(
            help="the bundle's dify-plugins/ directory (or a directory of .difypkg files)",
            exists=True,
            file_okay=False,
        ),
    ],
    console_url: Annotated[
        str, typer.Option("--console-url", help="Dify base URL, e.g. http://dify-api.<ns>:5001")
    ],
    admin_key_file: Annotated[
        Path,
        typer.Option(
            "--admin-key-file",
            help="file holding Dify's ADMIN_API_KEY (ADMIN_API_KEY_ENABLE=true)",
            exists=True,
            dir_okay=False,
        ),
    ],
    workspace_id: Annotated[str, typer.Option("--workspace-id", help="Dify workspace (tenant) id")],
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the install task (daemon default 15 min)")
    ] = 900.0,
    poll_interval: Annotated[float, typer.Option(help="seconds between task polls")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Upload, install and confirm every plugin not installed yet (idempotent)."""
    key = admin_key_file.read_text(encoding="utf-8").strip()
    if not key:
        err.print(f"[red]{admin_key_file} is empty[/red]")
        raise typer.Exit(2)
    try:
        report = asyncio.run(
            _install(directory, console_url, key, workspace_id, timeout, poll_interval)
        )
    except PluginInstallError as exc:
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": exc.code, "detail": exc.detail}))
        else:
            err.print(f"[red]plugin install failed:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    outcomes = [
        {"plugin": o.plugin_id, "uniqueIdentifier": o.unique_identifier, "action": o.action}
        for o in report.outcomes
    ]
    if as_json:
        # plain echo: rich would wrap long identifiers and break the JSON
        typer.echo(json.dumps({"ok": True, "taskId": report.task_id, "plugins": outcomes}))
        return
    for outcome in report.outcomes:
        console.print(f"{outcome.action:18} {outcome.unique_identifier}")
