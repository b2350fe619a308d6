"""The policy interface: one async question, one typed answer.

Every engine answers ``decide(input) -> Decision`` for the input document of
``policies/opa/README.md``. Engines never raise to say "no": a failure to reach or evaluate the
policy is itself a deny whose reason says what failed (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from llmflow.errors import LLMFlowError

PolicyInput = dict[str, Any]
"""The JSON input document sent to OPA (``{"subject", "action", "resource", "context"}``)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorization decision: ``allow`` and always a reason a person can read."""

    allow: bool
    reason: str

    @classmethod
    def deny(cls, reason: str) -> Decision:
        """A deny with ``reason``."""
        return cls(allow=False, reason=reason)


class PolicyError(LLMFlowError):
    """The policy could not be loaded (bad Rego, missing files): a configuration error."""

    status = 500
    code = "policy_error"
    title = "Authorization policy unavailable"


@runtime_checkable
class PolicyEngine(Protocol):
    """Answers authorization questions; implementations fail closed."""

    async def decide(self, input: PolicyInput) -> Decision:
        """Evaluate the decision rule for ``input``; never raises for an evaluation failure."""
        ...

    async def aclose(self) -> None:
        """Release connections or interpreters."""
        ...


def decision_from_result(result: object) -> Decision | None:
    """A :class:`Decision` from a policy result object, or None when it is malformed.

    Only a literal ``true`` allows; a reason must be a string. Anything else is malformed so
    that a policy bug (a missing reason, ``"allow": "yes"``) denies instead of allowing.
    """
    if not isinstance(result, dict):
        return None
    allow = result.get("allow")
    reason = result.get("reason")
    if not isinstance(allow, bool) or not isinstance(reason, str):
        return None
    return Decision(allow=allow, reason=reason)
