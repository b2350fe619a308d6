"""Authorization decisions: the ``llmflow.authz`` Rego policy, in-process or from OPA.

``build_policy_engine(settings)`` picks the engine from ``settings.policy.mode``:

* ``embedded`` — :class:`EmbeddedPolicy`, the Rego of ``<policies_dir>/opa`` run by regopy;
* ``http`` — :class:`HttpPolicy`, an OPA server's Data API at ``settings.policy.opa_url``.

Both fail closed and answer :class:`Decision` for the input of :func:`build_policy_input`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmflow.auth.policy.base import (
    Decision,
    PolicyEngine,
    PolicyError,
    PolicyInput,
    decision_from_result,
)
from llmflow.auth.policy.embedded import EmbeddedPolicy
from llmflow.auth.policy.http import HttpPolicy
from llmflow.auth.policy.inputs import (
    ACTIONS,
    CLASSIFICATIONS,
    build_policy_input,
    kb_resource,
    model_resource,
    subject_document,
)
from llmflow.settings import Settings

__all__ = [
    "ACTIONS",
    "CLASSIFICATIONS",
    "Decision",
    "EmbeddedPolicy",
    "HttpPolicy",
    "PolicyEngine",
    "PolicyError",
    "PolicyInput",
    "build_policy_engine",
    "build_policy_input",
    "decision_from_result",
    "kb_resource",
    "model_resource",
    "subject_document",
]


def build_policy_engine(settings: Settings) -> PolicyEngine:
    """The policy engine that ``settings.policy`` asks for."""
    policy = settings.policy
    if policy.mode == "http":
        if not policy.opa_url:
            raise PolicyError(
                "policy.opa_url (LLMFLOW_POLICY__OPA_URL) is required for mode 'http'"
            )
        return HttpPolicy(policy.opa_url, policy.decision_path, policy.timeout_s)
    opa_dir = settings.policies_dir / "opa"
    data: dict[str, Any] | None = None
    if policy.data_file is not None:
        data = _read_data(policy.data_file)
    return EmbeddedPolicy(opa_dir, policy.decision_path, data=data)


def _read_data(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot read policy data {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise PolicyError(f"policy data {path} must be a JSON object (the data document)")
    return doc
