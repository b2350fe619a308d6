"""``llmflow graph``: look at a knowledge base's graph (counts, a node's neighbourhood, the
citations of a chunk) — what graph-mode search walks through."""

from __future__ import annotations

from typing import Annotated, Any

import typer

graph_app = typer.Typer(
    help="The knowledge graph of a knowledge base (built at ingest; used by --mode graph).",
    no_args_is_help=True,
)
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant id")]
KbOpt = Annotated[list[str], typer.Option("--kb", help="knowledge base(s)")]


@graph_app.command("stats")
def stats(kb: KbOpt, tenant: TenantOpt = "default") -> None:
    """Node counts by label and edge counts by type."""
    from llmflow.cli import console, operator, run

    async def go(rt: Any) -> dict[str, int]:
        kbs = await rt.search.resolve_kbs(operator(tenant), kb)
        store = await rt.graph_store()
        counts: dict[str, int] = await store.counts(tenant, list(kbs.values()))
        return counts

    console.print_json(data=run(go))


@graph_app.command("show")
def show(
    node: Annotated[str, typer.Argument(help="an entity, article or document name, or node id")],
    kb: KbOpt,
    tenant: TenantOpt = "default",
    hops: Annotated[int, typer.Option(help="relationships to follow (1-3)")] = 1,
    limit: Annotated[int, typer.Option(help="at most this many nodes")] = 50,
) -> None:
    """A node's neighbourhood as JSON (nodes and edges)."""
    from llmflow.cli import console, operator, run

    async def go(rt: Any) -> dict[str, Any]:
        sub = await rt.graph.neighbourhood(operator(tenant), kb, node, hops=hops, limit=limit)
        result: dict[str, Any] = sub.to_dict()
        return result

    console.print_json(data=run(go))


@graph_app.command("refs")
def refs(
    chunk_id: Annotated[str, typer.Argument(help="a chunk id (from `llmflow search --json`)")],
    kb: KbOpt,
    tenant: TenantOpt = "default",
    reference: Annotated[
        str | None, typer.Option(help="only this citation, e.g. 제25조 or 보수규정")
    ] = None,
) -> None:
    """The passages a chunk's citations point at (제N조, 「법」 제N조, Section 4.2 …)."""
    from llmflow.cli import operator, print_results, run

    async def go(rt: Any) -> Any:
        return await rt.graph.follow_reference(operator(tenant), kb, chunk_id, reference)

    print_results(run(go), {})


def register(app: typer.Typer) -> None:
    app.add_typer(graph_app, name="graph")
