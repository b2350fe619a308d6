"""``llmflow dataset ...``: training datasets for LLaMA-Factory, versioned per tenant.

``import`` reads a CSV / JSONL / JSON / Parquet file or a saved Dify export, ``import-dify``
pages through a running Dify; both scrub PII with the tenant's policy, deduplicate, split
and store an immutable version. ``list``, ``show``, ``export`` and ``diff`` read versions.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from llmflow.training.datasets.dify import Grouping
    from llmflow.training.datasets.examples import Format
    from llmflow.training.datasets.readers import SourceKind, SourceRows
    from llmflow.training.datasets.service import ImportResult

dataset_app = typer.Typer(
    help=(
        "Training datasets for LLaMA-Factory: import CSV / JSONL / Parquet files or Dify "
        "conversation logs and annotations, scrub PII with the tenant's policy, convert to "
        "alpaca or sharegpt, deduplicate, split train/validation, and keep immutable "
        "versions in the object store (logged to MLflow when configured)."
    ),
    no_args_is_help=True,
)

TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="tenant id, e.g. dept-hr")]
NameOpt = Annotated[
    str, typer.Option("--name", "-n", help="dataset name: lower-case letters, digits, - and _")
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="alpaca | sharegpt (default: alpaca when every example is one question and "
        "one answer, else sharegpt)",
    ),
]
VersionOpt = Annotated[
    str | None,
    typer.Option(help="version label (default: v<N>); an existing label is refused"),
]
ClassificationOpt = Annotated[
    str | None,
    typer.Option(
        help="classification the PII policy is applied with: public, internal, confidential, "
        "secret (default: Settings.datasets.pii_classification)"
    ),
]
ValRatioOpt = Annotated[
    float | None, typer.Option(help="validation share, 0 to <1 (default: settings, 0.1)")
]
SeedOpt = Annotated[int | None, typer.Option(help="split seed (default: settings, 42)")]
GroupingOpt = Annotated[
    str,
    typer.Option(
        help="Dify messages: conversation (one multi-turn example per conversation) or "
        "message (one example per question)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    from llmflow.cli import err

    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _ref(value: str) -> tuple[str, str]:
    """``name@version`` (version defaults to ``latest``)."""
    name, _, version = value.partition("@")
    return name, version or "latest"


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int | None], Callable[[int], None]]]:
    """A factory of progress callbacks, drawn on stderr (silent with ``--json``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from llmflow.cli import err

    if not enabled:
        yield lambda _d, _t: lambda _n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:

        def task(description: str, total: int | None) -> Callable[[int], None]:
            task_id = progress.add_task(description, total=total)
            return lambda n: progress.advance(task_id, n)

        yield task


def _print_result(result: ImportResult, as_json: bool) -> None:
    from rich.table import Table

    from llmflow.cli import console, err

    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    row, report = result.version, result.version.report
    state = "stored" if result.created else "unchanged (same content as the latest version)"
    console.print(f"[bold]{row.name}@{row.version}[/bold] {state} · format {row.format}")
    table = Table("", "value", show_header=False)
    table.add_row("source rows", str(report["source_rows"]))
    table.add_row("train / validation", f"{row.train_rows} / {row.val_rows}")
    table.add_row("duplicates dropped", str(report["duplicates_dropped"]))
    rejected = ", ".join(f"{k} {v}" for k, v in report["rejected"].items()) or "none"
    table.add_row("rejected", rejected)
    pii = report["pii"]
    found = ", ".join(f"{k} {v}" for k, v in pii["entities"].items()) or "none"
    table.add_row(f"PII ({pii['surface']}, {pii['classification']})", found)
    lengths = report["lengths_chars"]
    table.add_row(
        "prompt chars p50 / p95 / max",
        f"{lengths['prompt']['p50']:.0f} / {lengths['prompt']['p95']:.0f} / "
        f"{lengths['prompt']['max']}",
    )
    table.add_row(
        "response chars p50 / p95 / max",
        f"{lengths['response']['p50']:.0f} / {lengths['response']['p95']:.0f} / "
        f"{lengths['response']['max']}",
    )
    table.add_row("content sha256", row.content_sha256)
    console.print(table)
    style = "green" if result.mlflow.run_id else "yellow"
    err.print(f"[{style}]MLflow:[/{style}] {result.mlflow.note}")


def _import(
    tenant: str,
    name: str,
    load: Callable[[Callable[[str, int | None], Callable[[int], None]]], Any],
    source_info: dict[str, Any],
    *,
    fmt: str | None,
    version: str | None,
    classification: str | None,
    val_ratio: float | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Load the source (``load`` is awaited with a progress factory), then import it."""
    import getpass

    from llmflow.cli import run
    from llmflow.training.datasets.service import DatasetService

    if fmt not in (None, "alpaca", "sharegpt"):
        raise _fail("--format must be alpaca or sharegpt")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"

    async def go(rt: Any) -> ImportResult:
        with _progress(not as_json) as task:
            source: SourceRows = await load(task)
            scrub = task("PII scrub", len(source.examples))
            return await DatasetService(rt).import_source(
                tenant,
                name,
                source,
                source_info,
                fmt=cast("Format | None", fmt),
                version=version,
                classification=classification,
                val_ratio=val_ratio,
                seed=seed,
                created_by=f"cli:{user}",
                progress=scrub,
            )

    _print_result(run(go), as_json)


@dataset_app.command("import")
def dataset_import(
    source: Annotated[
        Path,
        typer.Argument(
            help="a .csv, .jsonl, .json or .parquet file, or a saved Dify list response "
            "(--kind dify)",
            exists=True,
            dir_okay=False,
        ),
    ],
    tenant: TenantOpt,
    name: NameOpt,
    kind: Annotated[
        str | None,
        typer.Option(help="csv | jsonl | json | parquet | dify (default: from the extension)"),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="FIELD=COLUMN, repeatable; FIELD: instruction, input, output, system, "
            "history, messages (default: well-known column names)",
        ),
    ] = None,
    fmt: FormatOpt = None,
    version: VersionOpt = None,
    classification: ClassificationOpt = None,
    val_ratio: ValRatioOpt = None,
    seed: SeedOpt = None,
    grouping: GroupingOpt = "conversation",
    as_json: JsonOpt = False,
) -> None:
    """Import a file as a new version of dataset NAME.

    Rows with an empty question or answer, the wrong type, or PII the policy blocks are
    rejected (listed in the quality report); exact duplicates after normalisation are
    dropped. A corrupt file, a missing column or a file above the caps fails the import
    and stores nothing.
    """
    import hashlib

    from llmflow.cli import _settings
    from llmflow.training.datasets import dify, readers
    from llmflow.training.datasets.errors import DatasetFormatError

    settings = _settings().datasets
    size = source.stat().st_size
    if size > settings.max_file_bytes:
        raise _fail(
            f"{source} is {size} bytes; the cap is {settings.max_file_bytes} "
            "(LLMFLOW_DATASETS__MAX_FILE_BYTES)"
        )
    if kind is not None and kind not in (*readers.SOURCE_KINDS, "dify"):
        raise _fail("--kind must be csv, jsonl, json, parquet or dify")
    if grouping not in ("conversation", "message"):
        raise _fail("--grouping must be conversation or message")
    data = source.read_bytes()
    try:
        column_mapping = readers.ColumnMapping.parse(mapping or [])
        source_kind = kind or readers.detect_kind(source.name)
    except DatasetFormatError as exc:
        raise _fail(exc.detail) from exc

    async def load(task: Callable[[str, int | None], Callable[[int], None]]) -> SourceRows:
        def work() -> SourceRows:
            if kind == "dify":
                try:
                    document = json.loads(data)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise DatasetFormatError(f"{source.name} is not JSON ({exc})") from exc
                return dify.examples_from_export(document, cast("Grouping", grouping))
            return readers.load_examples(
                data,
                source.name,
                cast("SourceKind | None", kind),
                column_mapping,
                max_bytes=settings.max_file_bytes,
                max_rows=settings.max_rows,
                max_field_chars=settings.max_field_chars,
                progress=task(f"read {source.name}", None),
            )

        return await asyncio.to_thread(work)

    info = {
        "kind": source_kind,
        "file": source.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    _import(
        tenant,
        name,
        load,
        info,
        fmt=fmt,
        version=version,
        classification=classification,
        val_ratio=val_ratio,
        seed=seed,
        as_json=as_json,
    )


@dataset_app.command("import-dify")
def dataset_import_dify(
    tenant: TenantOpt,
    name: NameOpt,
    dify_url: Annotated[str, typer.Option(help="Dify base URL, e.g. http://dify-api:5001")],
    what: Annotated[str, typer.Option(help="messages | annotations")] = "messages",
    app_id: Annotated[
        str | None, typer.Option(help="console API: the app id (with the admin key)")
    ] = None,
    workspace_id: Annotated[
        str | None, typer.Option(help="console API: the workspace (X-WORKSPACE-ID)")
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            envvar="LLMFLOW_DIFY__ADMIN_API_KEY", help="console API: Dify's ADMIN_API_KEY"
        ),
    ] = None,
    app_key: Annotated[
        str | None,
        typer.Option(envvar="LLMFLOW_DIFY_APP_KEY", help="service API: the app's key (app-...)"),
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="service API messages: the end user whose logs to read")
    ] = None,
    fmt: FormatOpt = None,
    version: VersionOpt = None,
    classification: ClassificationOpt = None,
    val_ratio: ValRatioOpt = None,
    seed: SeedOpt = None,
    grouping: GroupingOpt = "conversation",
    as_json: JsonOpt = False,
) -> None:
    """Import a Dify app's conversation logs or annotations as a new version of NAME.

    Console API (--app-id, --workspace-id, admin key): every conversation of the app, or
    its annotations. Service API (app key): annotations, or the conversations of one --user.
    An operator's annotation replaces the model's answer; disliked or failed answers are
    rejected.
    """
    from llmflow.cli import _settings
    from llmflow.dify.client import DifyConsole, DifyService
    from llmflow.training.datasets import dify

    if what not in ("messages", "annotations") or grouping not in ("conversation", "message"):
        raise _fail("--what messages|annotations, --grouping conversation|message")
    console_mode = app_id is not None
    if console_mode and not (admin_key and workspace_id):
        raise _fail("the console API needs --workspace-id and the admin key")
    if not console_mode and not app_key:
        raise _fail("give --app-id (console API) or an app key (service API)")
    if not console_mode and what == "messages" and not user:
        raise _fail("the service API lists the conversations of one --user only")
    page_limit = _settings().datasets.dify_page_limit

    async def load(task: Callable[[str, int | None], Callable[[int], None]]) -> SourceRows:
        fetcher = dify.DifyLogFetcher(page_limit, task(f"Dify {what}", None))
        if console_mode:
            assert app_id and admin_key and workspace_id
            api = DifyConsole.with_admin_key(dify_url, admin_key, workspace_id)
            try:
                items = await (
                    fetcher.console_messages(api, app_id)
                    if what == "messages"
                    else fetcher.console_annotations(api, app_id)
                )
            finally:
                await api.aclose()
        else:
            assert app_key
            service = DifyService.with_key(dify_url, app_key)
            try:
                items = await (
                    fetcher.service_messages(service, user or "")
                    if what == "messages"
                    else fetcher.service_annotations(service)
                )
            finally:
                await service.aclose()
        if what == "annotations":
            return dify.examples_from_annotations(items)
        return dify.examples_from_messages(items, cast("Grouping", grouping))

    info = {
        "kind": f"dify-{'console' if console_mode else 'service'}-{what}",
        "dify_url": dify_url,
        "app_id": app_id,
        "user": user,
    }
    _import(
        tenant,
        name,
        load,
        info,
        fmt=fmt,
        version=version,
        classification=classification,
        val_ratio=val_ratio,
        seed=seed,
        as_json=as_json,
    )


@dataset_app.command("list")
def dataset_list(
    tenant: TenantOpt,
    name: Annotated[str | None, typer.Argument(help="only this dataset")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions of the tenant's datasets, oldest first."""
    from rich.table import Table

    from llmflow.cli import console, run
    from llmflow.training.datasets.service import DatasetService

    async def go(rt: Any) -> list[dict[str, Any]]:
        return [v.summary() for v in await DatasetService(rt).versions(tenant, name)]

    rows = run(go)
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table("dataset", "version", "format", "train", "val", "created", "sha256", "mlflow")
    for r in rows:
        table.add_row(
            r["name"],
            r["version"],
            r["format"],
            str(r["train_rows"]),
            str(r["val_rows"]),
            r["created_at"][:19],
            r["content_sha256"][:12],
            r["mlflow_run_id"] or "-",
        )
    console.print(table if rows else "no datasets")


@dataset_app.command("show")
def dataset_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest)")],
    tenant: TenantOpt,
    as_json: JsonOpt = False,
) -> None:
    """A version's manifest and quality report."""
    from llmflow.cli import console, run
    from llmflow.training.datasets.service import DatasetService

    name, version = _ref(ref)

    async def go(rt: Any) -> dict[str, Any]:
        row = await DatasetService(rt).get(tenant, name, version)
        return {**row.summary(), "files": row.files, "report": row.report}

    data = run(go)
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    else:
        console.print_json(data=data)


@dataset_app.command("export")
def dataset_export(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest)")],
    dest: Annotated[Path, typer.Argument(help="directory to write (LLaMA-Factory dataset_dir)")],
    tenant: TenantOpt,
) -> None:
    """Write a version's files (dataset_info.json, <name>_train.json, <name>_val.json,
    manifest.json) into DEST, verifying each file's SHA-256."""
    from llmflow.cli import console, run
    from llmflow.training.datasets.service import materialize

    name, version = _ref(ref)

    async def go(rt: Any) -> Path:
        return await materialize(rt, tenant, name, version, dest)

    out = run(go)
    console.print(f"wrote {out} (use dataset_dir: {out}, dataset: {name}_train)")


@dataset_app.command("diff")
def dataset_diff(
    a: Annotated[str, typer.Argument(help="NAME@VERSION (the old one)")],
    b: Annotated[str, typer.Argument(help="NAME@VERSION or VERSION of the same dataset")],
    tenant: TenantOpt,
    as_json: JsonOpt = False,
) -> None:
    """Rows added, removed and changed from A to B, and how the report's numbers moved.

    Rows are matched on everything but the final answer after normalisation: the same
    question with a different answer counts as changed."""
    from rich.table import Table

    from llmflow.cli import console, run
    from llmflow.training.datasets.service import DatasetService

    name_a, version_a = _ref(a)
    name_b, version_b = _ref(b) if "@" in b else (name_a, b)

    async def go(rt: Any) -> dict[str, Any]:
        return await DatasetService(rt).diff(tenant, name_a, version_a, name_b, version_b)

    result = run(go)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        return
    rows = result["rows"]
    console.print(
        f"[bold]{result['a']} → {result['b']}[/bold]: +{rows['added']} added, "
        f"-{rows['removed']} removed, ~{rows['changed']} changed, {rows['unchanged']} unchanged"
    )
    table = Table("", "A", "B", "Δ")
    for key, v in result["stats"].items():
        table.add_row(key, f"{v['a']:g}", f"{v['b']:g}", f"{v['delta']:+g}")
    console.print(table)
    for kind in ("added", "removed"):
        for sample in result["samples"][kind]:
            console.print(f"  {kind}: {sample['prompt'][:80]}")
    for sample in result["samples"]["changed"]:
        console.print(f"  changed: {sample['prompt'][:80]}")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
