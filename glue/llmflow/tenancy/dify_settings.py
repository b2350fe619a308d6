"""Settings of the Dify side of tenancy: how tenants map onto Dify, and how to reach it.

ARCHITECTURE §5: Dify's licence forbids operating a multi-tenant environment (one tenant =
one workspace) without written permission, so the mode is an explicit operator choice:

* ``instance-per-tenant`` (default): one single-workspace Dify release per tenant namespace.
* ``shared``: one Dify, one workspace; tenancy is enforced by LLMFlow's data plane (each
  tenant's knowledge bases are wired with that tenant's own API key).
* ``licensed-multi-workspace``: one workspace per tenant in one Dify — refused unless
  ``commercial_licence`` says a commercial authorisation exists.

Env: ``LLMFLOW_DIFY__MODE``, ``LLMFLOW_DIFY__ADMIN_API_KEY`` (or ``..._FILE``),
``LLMFLOW_DIFY__WORKSPACE_IDS='{"dept-hr": "<uuid>"}'`` ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from llmflow.errors import ConfigurationError

DifyMode = Literal["instance-per-tenant", "shared", "licensed-multi-workspace"]

_REPO = Path(__file__).resolve().parents[3]


class DifyLicenceError(ConfigurationError):
    """The chosen Dify mode needs a commercial licence the operator has not declared."""

    code = "dify_licence_required"
    title = "Dify commercial licence required"


class DifySettings(BaseModel):
    """Where each tenant's Dify is and how the wiring authenticates to it."""

    mode: DifyMode = Field(
        default="instance-per-tenant",
        description="ARCHITECTURE §5 (platform.yaml tenancy.difyMode)",
    )
    commercial_licence: bool = Field(
        default=False,
        description="set only when LangGenius granted written permission for multi-tenant "
        "use; required by licensed-multi-workspace",
    )
    base_url_template: str = Field(
        default="http://dify-api.{namespace}.svc:5001",
        description="instance-per-tenant: the Dify API of a tenant ({tenant}, {namespace})",
    )
    base_urls: dict[str, str] = Field(
        default_factory=dict, description="per-tenant Dify base URL overriding the template"
    )
    shared_base_url: str = Field(
        default="http://dify-api.llmflow-system.svc:5001",
        description="shared and licensed-multi-workspace modes: the one Dify",
    )
    admin_api_key: SecretStr | None = Field(
        default=None, description="Dify ADMIN_API_KEY (ADMIN_API_KEY_ENABLE=true in Dify)"
    )
    admin_api_key_file: Path | None = Field(
        default=None, description="file holding the admin key (a mounted Secret)"
    )
    workspace_ids: dict[str, str] = Field(
        default_factory=dict,
        description="tenant → Dify workspace id (X-WORKSPACE-ID); shared mode uses "
        "shared_workspace_id for every tenant",
    )
    shared_workspace_id: str | None = None
    retrieval_endpoint: str = Field(
        default="http://llmflow-glue-api.llmflow-system.svc:8080",
        description="LLMFlow API base URL as Dify sees it; Dify appends /retrieval",
    )
    gateway_endpoint: str = Field(
        default="http://llmflow-glue-gateway.llmflow-system.svc:8080/v1",
        description="OpenAI-compatible gateway URL (ends with /v1) for the model provider",
    )
    tools_openapi: str | None = Field(
        default=None,
        description="URL or file of LLMFlow's tools OpenAPI document (GET /v1/tools/openapi.json)",
    )
    agent_models: list[str] = Field(
        default_factory=lambda: ["llmflow-agent-research"],
        description="gateway model names of the LLMFlow agents, registered as LLM models",
    )
    llm_model: str | None = Field(
        default=None, description="model the app templates use (default: first llm model)"
    )
    providers_file: Path = Field(default=_REPO / "platform" / "dify" / "model-providers.yaml")
    templates_dir: Path = Field(default=_REPO / "platform" / "dify" / "apps")
    top_k: int = Field(default=5, ge=1, le=100, description="external datasets' default top_k")
    wire_on_apply: bool = Field(
        default=True, description="`tenant apply` also runs the wiring when the key is set"
    )
    chart_values: Path = Field(
        default=_REPO / "helm-values" / "dify" / "values.yaml",
        description="base Helm values every per-tenant release layers on",
    )
    values_dir: Path | None = Field(
        default=None,
        description="where instance-per-tenant Helm values are rendered "
        "(default <data_dir>/tenants/dify)",
    )
    timeout_s: float = 30.0
    manage: bool = Field(
        default=False,
        description="`tenant apply` manages Dify (install plan per mode, wiring); also on "
        "when the admin key is set or a non-default mode is chosen",
    )

    @property
    def managed(self) -> bool:
        """Whether the tenant control plane includes the Dify system."""
        return self.manage or self.mode != "instance-per-tenant" or self.admin_key() is not None

    def check_licence(self) -> None:
        """Refuse ``licensed-multi-workspace`` without the declared licence."""
        if self.mode == "licensed-multi-workspace" and not self.commercial_licence:
            raise DifyLicenceError(
                "dify mode 'licensed-multi-workspace' runs several tenants' workspaces in one "
                "Dify, which Dify's licence allows only with LangGenius's written permission; "
                "set LLMFLOW_DIFY__COMMERCIAL_LICENCE=true once that licence exists, or use "
                "'instance-per-tenant' (default) or 'shared'"
            )

    def admin_key(self) -> str | None:
        """The admin key from the setting or its file (never logged)."""
        if self.admin_api_key is not None:
            return self.admin_api_key.get_secret_value()
        if self.admin_api_key_file is not None and self.admin_api_key_file.is_file():
            return self.admin_api_key_file.read_text(encoding="utf-8").strip() or None
        return None

    def base_url(self, tenant: str, namespace: str) -> str:
        """The Dify API base URL serving ``tenant``."""
        if tenant in self.base_urls:
            return self.base_urls[tenant]
        if self.mode == "instance-per-tenant":
            return self.base_url_template.format(tenant=tenant, namespace=namespace)
        return self.shared_base_url

    def workspace_id(self, tenant: str) -> str | None:
        """The workspace the wiring acts in for ``tenant``."""
        if self.mode == "shared":
            return self.workspace_ids.get(tenant) or self.shared_workspace_id
        return self.workspace_ids.get(tenant)
