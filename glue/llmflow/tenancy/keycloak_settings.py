"""Settings of Keycloak provisioning (admin API access, templates, secrets)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

# Repository layout: glue/llmflow/tenancy/ -> repository root -> platform/keycloak.
_DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "platform" / "keycloak"


class KeycloakAdminSettings(BaseModel):
    """How the provisioning job reaches Keycloak's admin REST API.

    The admin API is called over the internal (backchannel) URL; tokens it mints for users
    still carry the public issuer because ``KC_HOSTNAME`` is a full URL
    (platform/keycloak/README.md).
    """

    server_url: str = Field(
        default="http://keycloak-keycloakx-http.llmflow-system.svc/auth",
        description="internal Keycloak base URL including the relative path (/auth)",
    )
    realm: str = Field(default="llmflow", description="realm that is provisioned")
    auth_realm: str = Field(default="master", description="realm the admin identity lives in")
    client_id: str = Field(
        default="admin-cli",
        description="admin client: admin-cli with username/password, or a confidential "
        "client with a service account holding realm-management roles",
    )
    username: str | None = None
    password: SecretStr | None = None
    client_secret: SecretStr | None = Field(
        default=None, description="client-credentials login instead of username/password"
    )
    verify_tls: bool | str = Field(default=True, description="False, True or a CA bundle path")
    timeout_s: int = 30
    template_dir: Path = Field(
        default=_DEFAULT_TEMPLATE_DIR,
        description="realm-llmflow.json, client-scope-llmflow.json, "
        "machine-client-template.json, client-secret-refs.yaml",
    )
    template_vars: dict[str, str] = Field(
        default_factory=dict,
        description="values for ${UPPER_CASE} variables in the templates, e.g. LLMFLOW_BASE_DOMAIN",
    )
    secrets_dir: Path | None = Field(
        default=None,
        description="mounted Kubernetes Secrets (<dir>/<name>/<key>) holding client secrets",
    )
    create_missing_users: bool = Field(
        default=True,
        description="create users named in tenants.yaml that do not exist yet (without "
        "credentials); turn off when users come from LDAP/AD federation only",
    )

    def require_login(self) -> None:
        """Fail early, with the variables to set, when no admin login is configured."""
        if self.client_secret is None and (self.username is None or self.password is None):
            raise ValueError(
                "Keycloak admin login needs username+password or client_secret "
                "(LLMFLOW_KEYCLOAK__USERNAME/PASSWORD or LLMFLOW_KEYCLOAK__CLIENT_SECRET)"
            )
