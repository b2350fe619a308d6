"""Gateway configuration: the routing table, backends, fallbacks and tenant quotas.

Part of ``Settings`` (``settings.gateway``, env ``LLMFLOW_GATEWAY__...``; the routing table is
usually given as JSON in ``LLMFLOW_GATEWAY__MODELS`` or in the Helm values).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class BackendConfig(BaseModel):
    """One upstream replica speaking the OpenAI API (vLLM, TEI's OpenAI route, Infinity, an
    external provider)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="base URL without /v1, e.g. http://vllm-0.vllm:8000")
    weight: float = Field(default=1.0, gt=0)
    api_key: SecretStr | None = None
    upstream_model: str | None = Field(
        default=None, description="model name the upstream serves, if it differs"
    )
    api: Literal["openai", "tei"] = Field(
        default="openai",
        description="tei: a text-embeddings-inference server; rerank calls go to its native "
        "/rerank ({query, texts}) and are translated (its /v1/embeddings is OpenAI's already)",
    )


class ModelRoute(BaseModel):
    """A model name clients ask for → the backends that serve it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["chat", "completion", "embedding", "rerank"] = "chat"
    provider: Literal["internal", "external", "agent"] = Field(
        default="internal",
        description="external = a model API outside the platform: policy decides which data "
        "classifications may reach it; agent = answered in this process by the in-process "
        "model named in 'handler' (no backends; policy treats it as internal)",
    )
    backends: list[BackendConfig] = Field(default_factory=list)
    handler: str | None = Field(
        default=None,
        description="provider 'agent' only: the in-process model that answers, e.g. 'research'",
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="models tried in order when every backend fails"
    )
    lora_base: str | None = Field(
        default=None,
        description="a LoRA adapter served by the backends of this base model; the gateway "
        "loads it on every replica (/v1/load_lora_adapter) before first use",
    )
    lora_path: str | None = Field(
        default=None, description="adapter directory as the vLLM replicas see it"
    )


class Quota(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=60, ge=1)
    tokens_per_day: int | None = Field(default=1_000_000, ge=1)


class GatewaySettings(BaseModel):
    models: list[ModelRoute] = Field(default_factory=list)
    timeout_s: float = Field(default=120.0, description="read timeout of one upstream call")
    connect_timeout_s: float = 3.0
    upstream_keepalive_s: float = Field(
        default=4.0,
        gt=0,
        description="idle upstream connections are closed after this long; keep it below the "
        "upstream's own keep-alive timeout (uvicorn, and so vLLM and TEI's Python peers, close "
        "idle connections after 5 s), or a request can go out on a connection the upstream "
        "is closing",
    )
    breaker_failures: int = Field(
        default=3, description="consecutive failures that open a backend's circuit"
    )
    breaker_reset_s: float = Field(
        default=15.0, description="an open circuit lets one probe through after this"
    )
    max_body_bytes: int = 4 * 1024 * 1024
    default_quota: Quota = Field(default_factory=Quota)
    quotas: dict[str, Quota] = Field(default_factory=dict, description="per tenant")
    pii_guard: bool = Field(default=True, description="apply the PII policy to prompts/answers")
    usage_store: Literal["postgres"] = "postgres"
    audit_calls: bool = Field(
        default=True,
        description="an audit event (model.use) per call, written in batches off the request path",
    )
    health_interval_s: float = Field(
        default=10.0, ge=0, description="active health checks of every backend; 0 = off"
    )
    health_timeout_s: float = Field(default=2.0, gt=0, description="timeout of one health probe")
    health_external: Literal["models", "skip"] = Field(
        default="skip",
        description="external providers: probe GET /v1/models (with the backend's API key), "
        "or leave them to the circuit breaker alone",
    )

    @model_validator(mode="after")
    def _check_routes(self) -> GatewaySettings:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"gateway.models: duplicate model names {dupes}")
        known = set(names)
        for m in self.models:
            if m.provider == "agent":
                if m.backends or not m.handler or m.kind != "chat" or m.fallbacks or m.lora_base:
                    raise ValueError(
                        f"gateway.models[{m.name}]: an 'agent' route is a chat model with a "
                        "'handler' and no backends, fallbacks or LoRA base"
                    )
            elif not m.backends:
                raise ValueError(f"gateway.models[{m.name}].backends: at least one backend")
            elif m.handler is not None:
                raise ValueError(f"gateway.models[{m.name}].handler: only for provider 'agent'")
            missing = [f for f in m.fallbacks if f not in known]
            if missing:
                raise ValueError(f"gateway.models[{m.name}].fallbacks: unknown models {missing}")
            if m.lora_base is not None and m.lora_base not in known:
                raise ValueError(f"gateway.models[{m.name}].lora_base: unknown {m.lora_base!r}")
        return self

    def route(self, name: str) -> ModelRoute | None:
        return next((m for m in self.models if m.name == name), None)

    def quota_for(self, tenant: str) -> Quota:
        return self.quotas.get(tenant, self.default_quota)
