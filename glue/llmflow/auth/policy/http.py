"""Decisions from an OPA server through its REST Data API, failing closed.

``POST {opa_url}/v1/data/{decision_path}`` with ``{"input": ...}`` answers ``{"result": ...}``,
or ``{}`` when the rule is undefined (https://www.openpolicyagent.org/docs/rest-api#get-a-document-with-input).
Timeouts, connection errors, any status but 200, a body that is not JSON, a missing result or a
result that is not ``{"allow": bool, "reason": str}`` all become a deny whose reason names the
failure; the details go to the log, never to the caller as an allow.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from llmflow.auth.policy.base import Decision, PolicyInput, decision_from_result

log = logging.getLogger(__name__)


class HttpPolicy:
    """An OPA server asked over one ``httpx.AsyncClient`` with an explicit timeout."""

    def __init__(
        self,
        opa_url: str,
        decision_path: str = "llmflow/authz/decision",
        timeout_s: float = 2.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``client`` is for callers that bring their own transport (tests, mTLS)."""
        self.decision_path = decision_path.strip("/")
        self.url = f"{opa_url.rstrip('/')}/v1/data/{self.decision_path}"
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))
        self._owns_client = client is None
        self._timeout = httpx.Timeout(timeout_s)

    async def decide(self, input: PolicyInput) -> Decision:
        """Ask OPA for the decision of ``input``; deny with a reason on any failure."""
        try:
            response = await self._client.post(
                self.url, json={"input": input}, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            log.error("OPA at %s timed out: %r", self.url, exc)
            return Decision.deny("policy engine timed out")
        except httpx.HTTPError as exc:
            log.error("OPA at %s unreachable: %r", self.url, exc)
            return Decision.deny("policy engine unreachable")
        if response.status_code != 200:
            log.error(
                "OPA at %s answered %s: %.500s", self.url, response.status_code, response.text
            )
            return Decision.deny(f"policy engine answered HTTP {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError:
            log.error("OPA at %s answered a body that is not JSON: %.500s", self.url, response.text)
            return Decision.deny("policy engine answered malformed JSON")
        if not isinstance(body, dict) or "result" not in body:
            log.error("OPA decision %s is undefined (no result)", self.decision_path)
            return Decision.deny("policy decision undefined")
        decision = decision_from_result(body["result"])
        if decision is None:
            log.error("OPA decision %s is malformed: %.500s", self.decision_path, body["result"])
            return Decision.deny("policy returned a malformed decision")
        return decision

    async def aclose(self) -> None:
        """Close the HTTP client if this engine created it."""
        if self._owns_client:
            await self._client.aclose()
