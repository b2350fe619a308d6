"""The ingest PII stage: every element is scanned and the tenant's ingest policy applied
before anything is chunked or indexed.

Actions at ingest (``policies/presidio/policy.yaml``, surface ``ingest``): ``allow`` keeps
the value searchable, ``mask`` / ``redact`` / ``hash`` / ``pseudonymize`` replace it in the
text that is chunked, embedded and indexed (the original file stays in the object store,
under the tenant's access control), ``block`` refuses the whole document. The report stored
with the document holds counts per entity type and the action taken — never a value.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace

from llmflow.errors import PiiBlocked
from llmflow.ingest.elements import DocumentError, Element
from llmflow.pii.anonymize import PiiGuard, Pseudonymizer
from llmflow.pii.config import Action, Surface
from llmflow.pii.report import PiiFinding, PiiReport


class PiiBlockedDocument(DocumentError):
    reason = "pii_blocked"


def apply_pii_policy(
    guard: PiiGuard, elements: list[Element], tenant: str, classification: str
) -> tuple[list[Element], PiiReport]:
    """The elements as they may be indexed, and the document's PII report.

    Raises :class:`PiiBlockedDocument` when the policy blocks an entity type found in the
    document; its message names the types, never the values.
    """
    report = PiiReport()
    # One pseudonymizer per document: the same person gets the same pseudonym in every
    # chunk, so retrieval still groups what belongs together.
    pseudonymizer = Pseudonymizer(guard.config.pseudonym_format)
    out: list[Element] = []
    try:
        for element, findings in zip(elements, _analyze_batched(guard, elements), strict=True):
            result = guard.apply(
                element.text,
                Surface.INGEST,
                classification=classification,
                tenant=tenant,
                pseudonymizer=pseudonymizer,
                findings=findings,
            )
            report.add(result.findings, {e: a.value for e, a in result.actions.items()})
            if not result.changed:
                out.append(element)
                continue
            table_html = element.table_html
            if table_html is not None:  # the cells hold the same values as the text
                table_html = _apply(guard, table_html, tenant, classification, pseudonymizer)
            out.append(
                replace(
                    element,
                    text=result.text,
                    table_html=table_html,
                    section_path=[
                        _apply(guard, s, tenant, classification, pseudonymizer)
                        for s in element.section_path
                    ],
                )
            )
    except PiiBlocked as exc:
        raise PiiBlockedDocument(
            f"the PII policy of tenant {tenant!r} for {classification} knowledge bases refuses "
            f"documents containing {', '.join(exc.entities)}"
        ) from exc
    return out, report


_SEPARATOR = "\n\n"  # a paragraph break: no recognizer matches across it
_BATCH_CHARS = 32_000


def _analyze_batched(guard: PiiGuard, elements: list[Element]) -> list[list[PiiFinding]]:
    """Findings per element, analysing many elements per call.

    Elements are short (a paragraph, a table row) and each analysis has a fixed cost of
    about a quarter millisecond in Presidio's orchestration, so elements are joined into
    batches of ~32 K characters and the findings mapped back by offset.
    """
    per_element: list[list[PiiFinding]] = [[] for _ in elements]
    batch: list[int] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        starts: list[int] = []
        pos = 0
        for i in batch:
            starts.append(pos)
            pos += len(elements[i].text) + len(_SEPARATOR)
        joined = _SEPARATOR.join(elements[i].text for i in batch)
        for f in guard.engine.analyze(joined):
            k = bisect_right(starts, f.start) - 1
            i, base = batch[k], starts[k]
            end = min(f.end, base + len(elements[i].text))
            if end > f.start:
                per_element[i].append(replace(f, start=f.start - base, end=end - base))
        batch, size = [], 0

    for i, element in enumerate(elements):
        if size + len(element.text) > _BATCH_CHARS:
            flush()
        batch.append(i)
        size += len(element.text) + len(_SEPARATOR)
    flush()
    return per_element


def _apply(
    guard: PiiGuard, text: str, tenant: str, classification: str, pseudonymizer: Pseudonymizer
) -> str:
    result = guard.apply(
        text,
        Surface.INGEST,
        classification=classification,
        tenant=tenant,
        pseudonymizer=pseudonymizer,
    )
    return result.text if any(a is not Action.ALLOW for a in result.actions.values()) else text
