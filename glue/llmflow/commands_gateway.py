"""``llmflow usage report``: token usage of a tenant from the gateway's ledger."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

usage_app = typer.Typer(help="LLM gateway usage (tokens, requests, latency).", no_args_is_help=True)


def _since(value: str) -> datetime:
    """An ISO date/time, or a relative span like 7d, 12h, 30m."""
    value = value.strip()
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[:-1].isdigit() and value[-1] in units:
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: use an ISO date (2026-11-01) or 7d / 12h") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@usage_app.command("report")
def usage_report(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant id, e.g. dept-hr")],
    since: Annotated[str, typer.Option(help="ISO date/time or 7d, 12h, 30m")] = "7d",
    until: Annotated[str | None, typer.Option(help="ISO date/time (exclusive)")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    group_by: Annotated[str, typer.Option(help="day | hour")] = "day",
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Requests, prompt and completion tokens, errors and latency per period and model."""
    from llmflow.api.routes_gateway import rows_to_csv
    from llmflow.cli import console, run
    from llmflow.gateway.usage import UsageLedger

    if group_by not in ("day", "hour") or fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("--group-by day|hour, --format table|csv|json")
    start, end = _since(since), _since(until) if until else None

    async def report(rt: Any) -> list[dict[str, Any]]:
        return await UsageLedger(rt.sessions).report(tenant, start, end, model, group_by)

    rows = run(report)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(rows_to_csv(rows))
    else:
        from rich.table import Table

        table = Table("period", "model", "requests", "prompt tokens", "completion tokens",
                      "errors", "p50 ms", "p95 ms")  # fmt: skip
        for r in rows:
            table.add_row(r["period"][:16], r["model"], str(r["requests"]),
                          f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}",
                          str(r["errors"]), f"{r['latency_p50_ms']:.1f}",
                          f"{r['latency_p95_ms']:.1f}")  # fmt: skip
        console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(usage_app, name="usage")
