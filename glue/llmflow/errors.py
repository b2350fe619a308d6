"""Domain errors shared by the API, the CLI and the workers.

Each carries an HTTP status and a stable ``code`` so the API edge can render RFC 9457
problem details and the CLI a one-line message a person can act on.
"""

from __future__ import annotations


class LLMFlowError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(LLMFlowError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(LLMFlowError):
    status = 409
    code = "conflict"
    title = "Conflict"


class InvalidRequest(LLMFlowError):
    status = 422
    code = "invalid_request"
    title = "Invalid request"


class PayloadTooLarge(LLMFlowError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class Unauthorized(LLMFlowError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(LLMFlowError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class ServiceUnavailable(LLMFlowError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class ConfigurationError(LLMFlowError):
    """A configuration file (policy, recognizers) is missing or invalid: the operator's fix."""

    status = 500
    code = "configuration_error"
    title = "Configuration error"


class PiiBlocked(LLMFlowError):
    """The PII policy says ``block`` for something in the text; ``entities`` names the types."""

    status = 422
    code = "pii_blocked"
    title = "Blocked by the PII policy"

    def __init__(self, detail: str, entities: list[str] | None = None) -> None:
        super().__init__(detail)
        self.entities = entities or []
