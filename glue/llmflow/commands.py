"""The longer CLI commands: ``eval``, ``bench`` and ``demo`` (kept out of cli.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmflow.cli import console, err, ingest_paths, operator, print_results, run

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "platform" / "samples"


def register(app: typer.Typer) -> None:
    from llmflow import commands_apisix, commands_gateway, commands_pii, commands_tenant

    eval_app = typer.Typer(
        help="Evaluate retrieval or PII detection quality on a dataset.", no_args_is_help=True
    )
    app.add_typer(eval_app, name="eval")
    eval_app.command("retrieval")(eval_retrieval)
    commands_pii.register(app, eval_app)
    commands_tenant.register(app)
    commands_gateway.register(app)
    commands_apisix.register(app)
    app.command()(demo)
    try:
        from llmflow.bench import bench_app
    except ImportError:  # bench module optional in trimmed installs
        return
    app.add_typer(bench_app, name="bench")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def eval_retrieval(
    dataset: Annotated[
        Path,
        typer.Option(help="BEIR-style or SQuAD/KorQuAD JSON file", exists=True, dir_okay=False),
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="beir | squad (default: detect)")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="hybrid, dense, lexical, graph or a comma list")
    ] = "hybrid",
    k: Annotated[str, typer.Option("--k", help="cut-offs for Recall@k")] = "1,3,5,10",
    limit: Annotated[int | None, typer.Option(help="evaluate only the first N queries")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    output: Annotated[
        Path | None, typer.Option(help="per-query rows: .jsonl, .csv or .parquet")
    ] = None,
) -> None:
    """Ingest the dataset's corpus into a temporary KB through the real pipeline, run every
    query through the real search path, report Recall@k, MRR@10, nDCG@10, ingest throughput
    and query latency p50/p99; the temporary KB is removed afterwards."""
    from llmflow.eval.datasets import load_dataset
    from llmflow.eval.retrieval import run_eval, write_rows

    modes = [m.strip() for m in mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("hybrid", "dense", "lexical", "graph")]
    if bad or not modes:
        raise typer.BadParameter(f"unknown mode(s) {bad}; use hybrid, dense, lexical, graph")
    if fmt not in (None, "beir", "squad"):
        raise typer.BadParameter("--format must be beir or squad")
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError as exc:
        raise typer.BadParameter("--k must be comma-separated integers") from exc
    if output is not None and output.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
        raise typer.BadParameter("--output must end in .jsonl, .csv or .parquet")
    ds = load_dataset(dataset, fmt).limited(limit)  # type: ignore[arg-type]

    async def go(rt: Any) -> Any:
        with _progress() as progress:
            tasks: dict[str, Any] = {}

            def update(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total)
                progress.update(tasks[name], completed=done)

            return await run_eval(rt, ds, modes, ks, update)

    report = run(go)
    summary = report.summary()
    if output is not None:
        write_rows(output, [row for m in report.modes for row in m.rows])
        summary["output"] = str(output)
    if as_json:
        console.print_json(data=summary)
        return
    multi_gold = any(len(g) > 1 for g in ds.qrels.values())
    table = Table(
        "mode",
        *[f"R@{x}" for x in ks],
        *([f"all-gold@{x}" for x in ks] if multi_gold else []),
        "MRR@10",
        "nDCG@10",
        "p50 ms",
        "p99 ms",
        title=f"{ds.name}: {len(ds.corpus)} docs, {report.modes[0].queries} queries",
    )
    for m in report.modes:
        table.add_row(
            m.mode,
            *[f"{m.recall[x]:.3f}" for x in ks],
            *([f"{m.all_gold[x]:.3f}" for x in ks] if multi_gold else []),
            f"{m.mrr10:.3f}",
            f"{m.ndcg10:.3f}",
            f"{m.latency_p50_ms:.1f}",
            f"{m.latency_p99_ms:.1f}",
        )
    console.print(table)
    if report.graph_cost:
        cost = ", ".join(f"{k.removesuffix('_per_1000_chunks')} {v}" for k, v in
                         report.graph_cost.items())  # fmt: skip
        console.print(f"graph build per 1,000 chunks: {cost}")
    console.print(
        f"ingest: {summary['corpus_docs']} docs, {summary['chunks']} chunks in "
        f"{summary['ingest_seconds']} s ({summary['ingest_docs_per_s']} docs/s, "
        f"{summary['ingest_chunks_per_s']} chunks/s); failed: {summary['failed_docs']}"
    )


def demo(
    tenant: Annotated[str, typer.Option("--tenant", "-t")] = "demo",
    kb: Annotated[str, typer.Option("--kb")] = "handbook",
    corpus: Annotated[Path, typer.Option(help="folder to ingest")] = SAMPLES / "corpus",
    queries: Annotated[Path, typer.Option(help="queries YAML")] = SAMPLES / "queries.yaml",
) -> None:
    """The main job on the embedded default: ingest the sample corpus (Korean and English,
    HWP/HWPX, PDF, DOCX, XLSX, HTML, Markdown), run the sample queries and print ranked
    results with citations and timings."""
    import yaml

    items = yaml.safe_load(queries.read_text(encoding="utf-8"))
    items = items.get("queries", items) if isinstance(items, dict) else items

    async def go(rt: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        console.rule("[bold]1. ingest[/bold]")
        jobs = await ingest_paths(rt, tenant, kb, [corpus], wait=True)
        table = Table("document", "status", "chunks", "pages", "PII found", "note")
        docs = {d["source"]: d for d in await rt.ingest.documents(tenant, kb)}
        for j in jobs:
            d = docs.get(j["source"], {})
            pii = (d.get("pii") or {}).get("counts") or {}
            table.add_row(
                j["source"],
                j["status"],
                str(d.get("chunks", "")),
                str(d.get("pages") or ""),
                ", ".join(f"{k}×{v}" for k, v in pii.items()) or "-",
                (j.get("error") or {}).get("message") or (j.get("stats") or {}).get("reason", ""),
            )
        console.print(table)
        console.print(f"ingest took {time.perf_counter() - t0:.1f} s")
        console.rule("[bold]2. search[/bold]")
        hits = 0
        for item in items:
            q = item["query"]
            resp = await rt.search.search(operator(tenant), [kb], q, top_k=3)
            top = resp.results[0] if resp.results else None
            ok = bool(
                top and Path(top.source).name == item.get("expected_file", Path(top.source).name)
            )
            hits += ok
            console.print(
                f"\n[bold magenta]Q:[/bold magenta] {q}  "
                + (
                    "[green]✓[/green]"
                    if ok
                    else f"[yellow]✗ expected {item.get('expected_file')}[/yellow]"
                )
            )
            print_results(resp.results, resp.timings_ms)
        return {"queries": len(items), "top1_hits": hits}

    result = run(go)
    console.rule("[bold]3. next[/bold]")
    console.print(f"top-1 correct: {result['top1_hits']}/{result['queries']}")
    console.print(
        "Start the API with [bold]make serve[/bold] (OpenAPI docs at "
        "http://127.0.0.1:8080/docs), then create a key for Dify:\n"
        f"  .venv/bin/llmflow apikey create --tenant {tenant} --kb {kb}\n"
        "and register http://<host>:8080 as an External Knowledge API in Dify "
        f"(knowledge id: {kb})."
    )
    console.print(json.dumps(result, ensure_ascii=False), style="dim")
