"""Applying the PII policy to text: allow, mask, redact, hash, block, pseudonymize.

The replacements run through Presidio's ``AnonymizerEngine`` with one operator per entity
type. ``pseudonymize`` is reversible: each distinct value becomes a stable pseudonym
(``<PERSON_1>``) for the lifetime of one :class:`Pseudonymizer` — one gateway request —
and the mapping lives only in that object's memory, so a model never sees the values and
its answer gets them back (:meth:`Pseudonymizer.restore`, :class:`StreamRestorer`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as AnonymizerResult

from llmflow.errors import PiiBlocked
from llmflow.pii.config import Action, PiiConfig, Surface
from llmflow.pii.engine import PiiEngine, PiiFinding
from llmflow.pii.pseudonyms import Pseudonymizer, StreamRestorer, mask_value

__all__ = [
    "AnonymizedText",
    "PiiGuard",
    "PiiMaskingFilter",
    "Pseudonymizer",
    "StreamRestorer",
    "mask",
    "mask_data",
    "mask_value",
    "set_default_guard",
]


@dataclass(slots=True)
class AnonymizedText:
    """The outcome of applying the policy to one text."""

    text: str
    findings: list[PiiFinding]
    actions: dict[str, Action]
    """entity type → action taken"""
    pseudonymizer: Pseudonymizer | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(a not in (Action.ALLOW,) for a in self.actions.values())


class PiiGuard:
    """The policy applied: analysis by :class:`PiiEngine`, replacement by Presidio's
    anonymizer with one operator per entity type."""

    def __init__(self, engine: PiiEngine, hash_salt: bytes) -> None:
        self.engine = engine
        self.config: PiiConfig = engine.config
        self._anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
        # Presidio wants >= 16 bytes of salt; a digest of the secret always has 32.
        self._salt = hashlib.sha256(b"llmflow-pii-hash\0" + hash_salt).digest()

    def apply(
        self,
        text: str,
        surface: Surface,
        *,
        classification: str = "internal",
        tenant: str = "",
        pseudonymizer: Pseudonymizer | None = None,
        findings: list[PiiFinding] | None = None,
    ) -> AnonymizedText:
        """Analyse ``text`` (unless ``findings`` are given) and apply the actions the
        policy names for this surface, classification and tenant.

        Raises :class:`PiiBlocked` when any finding's action is ``block``; the message
        names the entity types, never the values.
        """
        found = self.engine.analyze(text) if findings is None else findings
        actions = {
            f.entity_type: self.config.action_for(f.entity_type, surface, classification, tenant)
            for f in found
        }
        blocked = sorted(e for e, a in actions.items() if a is Action.BLOCK)
        if blocked:
            raise PiiBlocked(
                f"the PII policy for {surface.value} ({classification}) blocks "
                f"{', '.join(blocked)}",
                entities=blocked,
            )
        counts = dict(sorted(Counter(f.entity_type for f in found).items()))
        if not found or all(a is Action.ALLOW for a in actions.values()):
            return AnonymizedText(text, found, actions, pseudonymizer, counts)
        if Action.PSEUDONYMIZE in actions.values() and pseudonymizer is None:
            pseudonymizer = Pseudonymizer(self.config.pseudonym_format)
        operators = {
            entity: self._operator(entity, action, pseudonymizer)
            for entity, action in actions.items()
        }
        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=[
                AnonymizerResult(f.entity_type, f.start, f.end, f.score) for f in found
            ],
            operators=operators,
        )
        return AnonymizedText(result.text, found, actions, pseudonymizer, counts)

    def _operator(
        self, entity: str, action: Action, pseudonymizer: Pseudonymizer | None
    ) -> OperatorConfig:
        if action is Action.ALLOW:
            return OperatorConfig("keep")
        if action is Action.REDACT:
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if action is Action.HASH:
            return OperatorConfig("hash", {"hash_type": "sha256", "salt": self._salt})
        if action is Action.PSEUDONYMIZE:
            assert pseudonymizer is not None
            fn: Callable[[str], str] = lambda value: pseudonymizer.pseudonym(entity, value)  # noqa: E731
            return OperatorConfig("custom", {"lambda": fn})
        masker: Callable[[str], str] = lambda value: mask_value(entity, value)  # noqa: E731
        return OperatorConfig("custom", {"lambda": masker})

    def mask(self, text: str, tenant: str = "") -> str:
        """Text safe for logs, audit events and traces (the ``logs`` surface; a ``block``
        there masks instead: a log line is never dropped)."""
        try:
            return self.apply(text, Surface.LOGS, tenant=tenant).text
        except PiiBlocked:
            return self._mask_all(text)

    def _mask_all(self, text: str) -> str:
        out = text
        for f in sorted(self.engine.analyze(text), key=lambda f: -f.start):
            out = out[: f.start] + mask_value(f.entity_type, out[f.start : f.end]) + out[f.end :]
        return out


# --------------------------------------------------------------------------- logs & traces
_default_guard: PiiGuard | None = None
_default_lock = threading.Lock()


def set_default_guard(guard: PiiGuard) -> None:
    """Make ``guard`` the one :func:`mask` uses (the runtime registers its own)."""
    global _default_guard
    _default_guard = guard


def default_guard() -> PiiGuard:
    """The registered guard, or one built from the settings' policy file on first use."""
    global _default_guard
    if _default_guard is None:
        with _default_lock:
            if _default_guard is None:
                from llmflow.pii.config import default_config_path, load_config
                from llmflow.settings import load_settings

                settings = load_settings()
                path = settings.pii.config or default_config_path(settings.policies_dir)
                salt = settings.pii.hash_salt
                _default_guard = PiiGuard(
                    PiiEngine(load_config(path, settings.pii.score_threshold)),
                    salt.get_secret_value().encode() if salt else os.urandom(32),
                )
    return _default_guard


def mask(text: str, tenant: str = "") -> str:
    """PII-free text for logs, audit events and Langfuse traces (the ``logs`` rules of the
    policy; a ``block`` there masks, a log line is never dropped)."""
    if not text or not text.strip():
        return text
    return default_guard().mask(text, tenant)


def mask_data(value: Any, tenant: str = "") -> Any:
    """:func:`mask` applied to every string inside a JSON-like value (trace inputs and
    outputs, audit event details); keys are kept."""
    if isinstance(value, str):
        return mask(value, tenant)
    if isinstance(value, dict):
        return {k: mask_data(v, tenant) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v, tenant) for v in value]
    return value


class PiiMaskingFilter(logging.Filter):
    """A logging filter that masks PII in the formatted message and in string ``extra``
    fields before any handler sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Mask the template and each argument, keeping their shape: formatters such as
        # uvicorn's access formatter unpack ``record.args`` themselves.
        if isinstance(record.msg, str):
            record.msg = mask(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: mask(v) if isinstance(v, str) else v for k, v in record.args.items()}
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_RECORD_KEYS and isinstance(value, str):
                setattr(record, key, mask(value))
        return True


_STANDARD_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def install_log_masking(
    loggers: tuple[str, ...] = ("", "uvicorn", "uvicorn.error", "uvicorn.access"),
) -> int:
    """Put :class:`PiiMaskingFilter` on every handler of these loggers (idempotent), so that
    records from any module are masked before they are written; returns how many handlers
    got it. Handler filters, not logger filters: a logger's filter misses the records its
    children propagate."""
    added = 0
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, PiiMaskingFilter) for f in handler.filters):
                handler.addFilter(PiiMaskingFilter())
                added += 1
    return added
