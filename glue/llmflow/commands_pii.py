"""``llmflow pii ...`` and ``llmflow eval pii``: the PII engine from the command line.

These commands need no database: they build the engine from the policy file only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from llmflow.errors import LLMFlowError
from llmflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from llmflow.pii.anonymize import PiiGuard
    from llmflow.pii.engine import PiiEngine

pii_app = typer.Typer(
    help="Korean PII engine: scan text for personal data, apply the masking policy.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

InputArg = Annotated[str, typer.Argument(help="a UTF-8 text file, or '-' to read standard input")]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy", help="PII policy YAML (default: Settings.pii.config or policies/presidio)"
    ),
]


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        err.print(f"[red]no such file:[/red] {path}")
        raise typer.Exit(2) from exc
    except UnicodeDecodeError as exc:
        err.print(f"[red]{path} is not UTF-8 text[/red] (extract text first, e.g. llmflow ingest)")
        raise typer.Exit(2) from exc


def _engine(policy: Path | None, settings: Settings | None = None) -> PiiEngine:
    from llmflow.pii.config import default_config_path, load_config
    from llmflow.pii.engine import PiiEngine

    settings = settings or load_settings()
    path = policy or settings.pii.config or default_config_path(settings.policies_dir)
    try:
        return PiiEngine(load_config(path, settings.pii.score_threshold))
    except LLMFlowError as exc:
        err.print(f"[red]{exc.title}:[/red] {exc.detail}")
        raise typer.Exit(2) from exc


def _guard(policy: Path | None) -> PiiGuard:
    import os

    from llmflow.pii.anonymize import PiiGuard

    settings = load_settings()
    salt = settings.pii.hash_salt
    return PiiGuard(
        _engine(policy, settings), salt.get_secret_value().encode() if salt else os.urandom(32)
    )


@pii_app.command("scan")
def pii_scan(
    source: InputArg,
    policy: PolicyOpt = None,
    language: Annotated[
        str | None, typer.Option(help="ko | en; default: ko when the text has Hangul")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="minimum score (0-1)")] = None,
) -> None:
    """Print the PII spans of a text as JSON: offsets, type, score, recognizer, text."""
    text = _read(source)
    engine = _engine(policy)
    findings = engine.analyze(text, language=language, score_threshold=threshold)
    console.print_json(
        data={
            "source": source,
            "characters": len(text),
            "entities": [{**f.to_dict(), "text": text[f.start : f.end]} for f in findings],
        }
    )


@pii_app.command("anonymize")
def pii_anonymize(
    source: InputArg,
    policy: PolicyOpt = None,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="tenant whose rules apply")] = "",
    classification: Annotated[
        str, typer.Option(help="public | internal | confidential | secret")
    ] = "internal",
    surface: Annotated[
        str, typer.Option(help="ingest | prompt | response | anonymize | logs")
    ] = "anonymize",
) -> None:
    """Apply the PII policy to a text and print the result (exit 3 when it is blocked)."""
    from llmflow.errors import PiiBlocked
    from llmflow.pii.config import Surface

    try:
        target = Surface(surface)
    except ValueError as exc:
        err.print(f"[red]unknown surface {surface!r}[/red]: use {[s.value for s in Surface]}")
        raise typer.Exit(2) from exc
    text = _read(source)
    try:
        result = _guard(policy).apply(text, target, classification=classification, tenant=tenant)
    except PiiBlocked as exc:
        err.print(f"[red]blocked:[/red] {exc.detail}")
        raise typer.Exit(3) from exc
    sys.stdout.write(result.text)
    if not result.text.endswith("\n"):
        sys.stdout.write("\n")
    err.print(
        "actions: "
        + (", ".join(f"{e}×{result.counts[e]}→{a.value}" for e, a in result.actions.items()) or "-")
    )


@pii_app.command("entities")
def pii_entities(policy: PolicyOpt = None) -> None:
    """List the entity types the engine reports."""
    from llmflow.pii.recognizers import describe

    described = describe()
    for entity in _engine(policy).entities:
        console.print(f"{entity:22} {described.get(entity, 'Presidio predefined recognizer')}")


def eval_pii(
    dataset: Annotated[Path, typer.Option(help="evaluation set", exists=True, dir_okay=False)],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="ko-pii-spans: {text, spans:[{label,start,end,text}]} JSONL; ko-pii: "
            "{text, pii:[{type,text}]} JSONL; presidio: presidio-research InputSample JSON",
        ),
    ] = "ko-pii-spans",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
    predictions: Annotated[
        Path | None,
        typer.Option(help="score another tool's predictions (JSONL, one line per sample)"),
    ] = None,
    save_predictions: Annotated[
        Path | None, typer.Option(help="write this engine's predictions (JSONL)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N documents")] = None,
    policy: PolicyOpt = None,
) -> None:
    """Precision, recall and F1 of the PII engine, overall and per label, under three
    matching rules (exact span, overlapping span, entity-text set), plus documents/s and
    MB/s of the detector (single process, no NLP model)."""
    from llmflow.eval.pii import PII_FORMATS, run_pii_eval
    from llmflow.pii.labels import KO_PII_LABELS, PRESIDIO_RESEARCH_LABELS

    if fmt not in PII_FORMATS:
        err.print(f"[red]unknown format {fmt!r}[/red]: use one of {', '.join(PII_FORMATS)}")
        raise typer.Exit(2)
    label_map: dict[str, str | None] | None = None
    detect = None
    if predictions is None:
        engine = _engine(policy)
        if fmt == "presidio":
            from llmflow.eval.pii import PRESIDIO_RESEARCH_LABEL_MAP

            label_map = {
                **PRESIDIO_RESEARCH_LABEL_MAP,
                **PRESIDIO_RESEARCH_LABELS,
            }
        else:
            label_map = dict(KO_PII_LABELS)

        def detect(text: str) -> list[Any]:
            return [_Span(f.entity_type, f.start, f.end, f.score, f.recognizer)
                    for f in engine.analyze(text)]  # fmt: skip

    try:
        report = run_pii_eval(
            dataset,
            fmt,
            detect,
            predictions=predictions,
            label_map=label_map,
            limit=limit,
            write_predictions_to=save_predictions,
        )
    except LLMFlowError as exc:
        err.print(f"[red]{exc.title}:[/red] {exc.detail}")
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(report.render_table() + "\n")


class _Span:
    """A finding in the shape the evaluation harness reads (label, start, end, …)."""

    __slots__ = ("end", "label", "recognizer", "score", "start")

    def __init__(self, label: str, start: int, end: int, score: float, recognizer: str) -> None:
        self.label, self.start, self.end = label, start, end
        self.score, self.recognizer = score, recognizer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Hook the PII commands into the main CLI."""
    app.add_typer(pii_app, name="pii")
    eval_app.command("pii")(eval_pii)
