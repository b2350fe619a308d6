"""In-process policy evaluation with ``regopy`` (rego-cpp): the same Rego files OPA loads.

Findings that shape this module (regopy 1.5.2, measured on this repository's policy):

* ``Interpreter.query`` recompiles the modules on every call (about 13 ms a decision); a bundle
  compiled once with the decision as an entrypoint answers in well under a millisecond.
* An interpreter holds the input as mutable state (``set_input`` then query), so sharing one
  across threads mixes inputs: 862 wrong answers in 16,000 concurrent decisions in our test.
  Each evaluation therefore borrows an interpreter from a pool; the compiled bundle is shared
  read-only (0 wrong answers in the same test).
* ``with input as`` crashes regopy, hence input set per evaluation.
* rego-cpp prints strings in its result text without JSON escaping, so regopy's own
  ``Output`` parsing raises on a reason that contains a quote or a newline taken from the
  input. We read the result text ourselves and accept only the exact decision shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
from pathlib import Path
from typing import Any

# Kiwi (the Korean analyser) must load before regopy: the other way round, creating a
# Kiwi() later aborts the process with "free(): invalid pointer" (both bundle native
# allocators; measured with kiwipiepy 0.22 and regopy 1.5.2). The ingest worker and the
# API create Kiwi after the policy engine, so the order is fixed here, where regopy loads.
import kiwipiepy  # noqa: F401  (isort: keep before regopy)
import regopy
from regopy import rego_shared

from llmflow.auth.policy.base import Decision, PolicyError, PolicyInput, decision_from_result

log = logging.getLogger(__name__)

# The decision object as rego-cpp prints it: keys sorted, so "allow" always comes first and
# nothing inside the reason can change it.
_DECISION_TEXT = re.compile(
    r'\A\{"expressions":\[\{"allow":(true|false), "reason":"(.*)"\}\]\}\Z', re.DOTALL
)


def load_policy_files(opa_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The Rego modules (tests excluded) and the merged ``data.json`` documents of ``opa_dir``."""
    if not opa_dir.is_dir():
        raise PolicyError(f"policy directory {opa_dir} does not exist")
    modules = {
        p.relative_to(opa_dir).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(opa_dir.rglob("*.rego"))
        if not p.name.endswith("_test.rego")
    }
    if not modules:
        raise PolicyError(f"no Rego modules in {opa_dir}")
    data: dict[str, Any] = {}
    for p in sorted(opa_dir.rglob("data.json")):
        # OPA roots a data.json at its directory's path below the loaded directory.
        doc = json.loads(p.read_text(encoding="utf-8"))
        for part in reversed(p.parent.relative_to(opa_dir).parts):
            doc = {part: doc}
        _merge(data, doc)
    return modules, data


def _merge(into: dict[str, Any], doc: dict[str, Any]) -> None:
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def parse_decision_text(text: str) -> Decision | None:
    """A :class:`Decision` from rego-cpp's result text, or None for anything else."""
    try:
        parsed = json.loads(text)
    except ValueError:
        # Unescaped characters from the input inside the reason: read the strict shape.
        match = _DECISION_TEXT.match(text)
        if match is None:
            return None
        return Decision(allow=match.group(1) == "true", reason=match.group(2))
    if not isinstance(parsed, dict):
        return None
    expressions = parsed.get("expressions")
    if not isinstance(expressions, list) or len(expressions) != 1:
        return None
    return decision_from_result(expressions[0])


class EmbeddedPolicy:
    """Evaluates ``decision_path`` of the Rego in ``opa_dir`` in-process, off the event loop."""

    def __init__(
        self,
        opa_dir: Path,
        decision_path: str = "llmflow/authz/decision",
        data: dict[str, Any] | None = None,
        extra_entrypoints: tuple[str, ...] = (),
    ) -> None:
        """Compile the policy once; ``data`` replaces the directory's ``data.json`` documents."""
        modules, file_data = load_policy_files(opa_dir)
        self.decision_path = decision_path.strip("/")
        self._entrypoints = tuple(dict.fromkeys((self.decision_path, *extra_entrypoints)))
        builder = regopy.Interpreter()
        try:
            builder.add_data(file_data if data is None else data)
            for name, source in modules.items():
                builder.add_module(name, source)
            self._bundle = builder.build(None, list(self._entrypoints))
        except regopy.RegoError as exc:
            raise PolicyError(f"cannot compile the policies in {opa_dir}: {exc}") from exc
        if not self._bundle.ok():
            raise PolicyError(f"cannot compile the policies in {opa_dir}")
        self._idle: queue.SimpleQueue[regopy.Interpreter] = queue.SimpleQueue()

    async def decide(self, input: PolicyInput) -> Decision:
        """The decision at ``decision_path`` for ``input``; deny on any evaluation failure."""
        return await self.decide_at(self.decision_path, input)

    async def decide_at(self, entrypoint: str, input: PolicyInput) -> Decision:
        """The decision of another compiled entrypoint (e.g. ``llmflow/apisix/decision``)."""
        return await asyncio.to_thread(self.decide_sync, entrypoint, input)

    def decide_sync(self, entrypoint: str, input: PolicyInput) -> Decision:
        """Blocking evaluation; call from a worker thread (``decide`` does)."""
        try:
            text = self.evaluate_text(entrypoint, input)
        except PolicyError as exc:
            log.error("policy evaluation failed at %s: %s", entrypoint, exc.detail)
            return Decision.deny("policy evaluation failed")
        except Exception:  # fail closed: an engine fault must never surface as anything but deny
            log.exception("policy evaluation crashed at %s", entrypoint)
            return Decision.deny("policy evaluation failed")
        if text == "undefined":
            log.error("policy %s is undefined for the input", entrypoint)
            return Decision.deny("policy decision undefined")
        decision = parse_decision_text(text)
        if decision is None:
            log.error("policy %s returned a malformed decision: %.500s", entrypoint, text)
            return Decision.deny("policy returned a malformed decision")
        return decision

    def evaluate(self, entrypoint: str, input: Any) -> Any:
        """The raw value of a compiled entrypoint for ``input`` (None when undefined).

        For results whose strings come from the policy rather than the caller (the APISIX
        decision): raises :class:`PolicyError` when the text is not JSON, see the module notes.
        """
        text = self.evaluate_text(entrypoint, input)
        if text == "undefined":
            return None
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise PolicyError(
                f"policy {entrypoint} returned unreadable text: {text[:200]}"
            ) from exc
        expressions = parsed.get("expressions") if isinstance(parsed, dict) else None
        if not isinstance(expressions, list) or len(expressions) != 1:
            raise PolicyError(f"policy {entrypoint} returned {text[:200]}")
        return expressions[0]

    def evaluate_text(self, entrypoint: str, input: Any) -> str:
        """rego-cpp's result text of a compiled entrypoint; ``undefined`` when undefined."""
        entrypoint = entrypoint.strip("/")
        if entrypoint not in self._entrypoints:
            raise PolicyError(f"policy entrypoint {entrypoint} is not compiled")
        try:
            interpreter = self._idle.get_nowait()
        except queue.Empty:
            interpreter = regopy.Interpreter()
        try:
            return self._evaluate(interpreter, entrypoint, input)
        except (regopy.RegoError, TypeError, ValueError) as exc:
            raise PolicyError(f"policy {entrypoint} failed: {exc}") from exc
        finally:
            self._idle.put(interpreter)

    def _evaluate(self, interpreter: regopy.Interpreter, entrypoint: str, input: Any) -> str:
        interpreter.set_input(input)
        # regopy's Output wrapper parses the text with json.loads, which fails on the unescaped
        # strings described above, so the text is read through the C API it wraps.
        output = rego_shared.rego_bundle_query_entrypoint(
            interpreter._impl, self._bundle._impl, entrypoint
        )
        try:
            text = rego_shared.rego_output_string(output)
            # Evaluation errors come back as an "(error ...)" tree, sometimes with ok set.
            if not rego_shared.rego_output_ok(output) or text.startswith("(error"):
                raise ValueError(f"rego error: {text[:500]}")
            return str(text)
        finally:
            rego_shared.rego_free_output(output)

    async def aclose(self) -> None:
        """Drop the idle interpreters (they are freed by regopy's destructors)."""
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                return
