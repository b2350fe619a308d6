"""Keycloak single sign-on for the Dify console (community edition), and offboarding.

Flow (docs/dify-sso.md has the sequence diagram):

1. ``GET /sso/dify/login?tenant=T`` → a state, a nonce and a PKCE verifier (S256) go into a
   short-lived cookie sealed with AES-GCM; the browser is sent to Keycloak's
   ``/realms/llmflow/protocol/openid-connect/auth``.
2. ``GET /sso/dify/callback?code&state`` → the state is checked against the cookie, the code
   exchanged at the token endpoint (``authorization_code`` + ``code_verifier``, confidential
   client), the **access token verified** by the glue's JWT verifier (issuer, audience,
   signature by JWKS) and the **ID token** by the same JWKS (audience = this client, nonce).
   The tenant comes only from the verified ``tenant`` claim; a ``tenant`` query hint that
   disagrees is refused.
3. The Dify account is found or provisioned in the tenant's Dify workspace with the role
   mapped from the realm roles (:func:`~llmflow.dify.members.dify_role_for`), and a Dify
   session is obtained (:mod:`llmflow.dify.members`, the one module coupled to Dify's
   account internals).
4. The browser gets Dify's session cookies and lands on the console.

Offboarding: :func:`offboard_tenant` reads who is entitled from Keycloak's admin API (users
with the tenant attribute, enabled, in ``/tenants/<tenant>``, with a mapped realm role) and
removes every other non-owner member from the tenant's Dify workspace.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import text

from llmflow.dify.client import DifyConsole, DifyError
from llmflow.dify.members import (
    DIFY_ROLE_RANK,
    DifyAccountLogin,
    DifyMembers,
    DifySession,
    ReconcileReport,
    dify_role_for,
    new_password,
    reconcile_members,
)
from llmflow.dify.secrets import SecretBox
from llmflow.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    LLMFlowError,
    ServiceUnavailable,
    Unauthorized,
)

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal
    from llmflow.runtime import Runtime
    from llmflow.tenancy.dify_settings import DifySettings
    from llmflow.tenancy.keycloak_settings import KeycloakAdminSettings

log = logging.getLogger(__name__)

STATE_COOKIE = "llmflow_dify_sso"
STATE_CONTEXT = "dify-sso-state"
SHARED_INSTANCE = "*"


class DifyInstance(BaseModel):
    """One Dify instance (one workspace) as the SSO bridge reaches it."""

    api_url: str = Field(description="Dify API base URL (console API under /console/api)")
    web_url: str = Field(description="Dify console web URL the browser lands on")
    workspace_id: str = Field(description="the workspace (Dify tenant id) users join")
    admin_api_key: SecretStr | None = Field(default=None, description="Dify's ADMIN_API_KEY")
    admin_api_key_file: Path | None = None
    field_encryption_key: SecretStr | None = Field(
        default=None,
        description="Dify's ENCRYPTION_KEY when ENABLE_FIELD_ENCRYPTION=true (login passwords "
        "are then sent encrypted the way Dify's web app does)",
    )

    def admin_key(self) -> str:
        if self.admin_api_key is not None:
            return self.admin_api_key.get_secret_value()
        if self.admin_api_key_file is not None:
            return self.admin_api_key_file.read_text().strip()
        raise ConfigurationError(f"Dify instance {self.api_url}: no admin_api_key configured")


class DifySsoSettings(BaseModel):
    """``LLMFLOW_DIFY_SSO__…``: the Keycloak client of the Dify console and the Dify
    instances per tenant."""

    client_id: str = Field(
        default="dify", description="Keycloak client (confidential; `dify` in realm-llmflow.json)"
    )
    client_secret: SecretStr | None = None
    authorization_url: str | None = Field(
        default=None,
        description="public auth endpoint; default <auth.issuer>/protocol/openid-connect/auth",
    )
    token_url: str | None = Field(
        default=None,
        description="internal token endpoint; default next to auth.jwks_url, else under the issuer",
    )
    redirect_uri: str | None = Field(
        default=None,
        description="public URL of /sso/dify/callback (default: derived from the request)",
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    instances: dict[str, DifyInstance] = Field(
        default_factory=dict,
        description="tenant → Dify instance; '*' serves every tenant (shared mode)",
    )
    interface_language: str = "ko-KR"
    timezone: str = "Asia/Seoul"
    require_verified_email: bool = True
    state_ttl_s: int = 600
    protected_members: list[str] = Field(
        default_factory=list, description="emails offboarding never removes (break-glass)"
    )
    timeout_s: float = 15.0

    web_url_template: str | None = Field(
        default=None,
        description="console web URL of a tenant not listed in `instances` ({tenant}), e.g. "
        "https://dify-{tenant}.llmflow.example; with it, the API URL, workspace id and admin "
        "key come from the `dify` settings the wiring uses",
    )

    def instance(
        self, tenant: str, dify: DifySettings | None = None, namespace: str | None = None
    ) -> DifyInstance:
        """The Dify instance serving ``tenant``: an explicit entry of ``instances`` (or
        ``'*'``), else the wiring's ``dify`` settings with ``web_url_template``."""
        found = self.instances.get(tenant) or self.instances.get(SHARED_INSTANCE)
        if found is not None:
            return found
        if dify is not None and self.web_url_template:
            workspace, key = dify.workspace_id(tenant), dify.admin_key()
            if workspace and key:
                return DifyInstance(
                    api_url=dify.base_url(tenant, namespace or tenant),
                    web_url=self.web_url_template.format(tenant=tenant),
                    workspace_id=workspace,
                    admin_api_key=SecretStr(key),
                )
        raise Forbidden(f"no Dify instance is configured for tenant {tenant!r}")


# ---------------------------------------------------------------- PKCE and state


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the login step hands to the callback (sealed in a cookie)."""

    state: str
    nonce: str
    verifier: str
    tenant_hint: str | None
    redirect_uri: str
    expires_at: float

    def seal(self, box: SecretBox) -> str:
        return box.seal(json.dumps(_state_dict(self)), STATE_CONTEXT)

    @classmethod
    def open(cls, box: SecretBox, sealed: str) -> LoginState:
        data = json.loads(box.open(sealed, STATE_CONTEXT))
        return cls(**data)


def _state_dict(s: LoginState) -> dict[str, Any]:
    return {
        "state": s.state,
        "nonce": s.nonce,
        "verifier": s.verifier,
        "tenant_hint": s.tenant_hint,
        "redirect_uri": s.redirect_uri,
        "expires_at": s.expires_at,
    }


def _endpoint(sso: DifySsoSettings, issuer: str, jwks_url: str | None, kind: str) -> str:
    base = issuer.rstrip("/") + "/protocol/openid-connect"
    if kind == "auth":
        return sso.authorization_url or base + "/auth"
    if sso.token_url:
        return sso.token_url
    if jwks_url and jwks_url.endswith("/certs"):
        return jwks_url.removesuffix("/certs") + "/token"  # the internal (backchannel) host
    return base + "/token"


def begin_login(
    sso: DifySsoSettings, issuer: str, box: SecretBox, redirect_uri: str, tenant_hint: str | None
) -> tuple[str, str]:
    """The Keycloak authorization URL and the sealed state cookie value."""
    verifier, challenge = pkce_pair()
    state = LoginState(
        state=secrets.token_urlsafe(24),
        nonce=secrets.token_urlsafe(24),
        verifier=verifier,
        tenant_hint=tenant_hint,
        redirect_uri=redirect_uri,
        expires_at=time.time() + sso.state_ttl_s,
    )
    query = {
        "response_type": "code",
        "client_id": sso.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(sso.scopes),
        "state": state.state,
        "nonce": state.nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    url = _endpoint(sso, issuer, None, "auth") + "?" + urlencode(query)
    return url, state.seal(box)


def check_state(box: SecretBox, sealed: str | None, state: str) -> LoginState:
    """The login state of this callback; Unauthorized when missing, expired or not ours."""
    if not sealed:
        raise Unauthorized("login state cookie missing: start again at /sso/dify/login")
    try:
        login = LoginState.open(box, sealed)
    except (LLMFlowError, ValueError, TypeError):
        raise Unauthorized("login state cookie is not valid: start again") from None
    if login.expires_at < time.time():
        raise Unauthorized("the login took too long: start again at /sso/dify/login")
    if not hmac.compare_digest(login.state.encode(), state.encode()):
        raise Unauthorized("state does not match this browser's login")
    return login


# ---------------------------------------------------------------- code exchange and tokens


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    """The verified result of a Keycloak login."""

    principal: Principal
    email: str
    display_name: str
    email_verified: bool


async def exchange_code(
    runtime: Runtime,
    sso: DifySsoSettings,
    login: LoginState,
    code: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> VerifiedLogin:
    """Exchange the authorization code and verify both tokens (see module docstring)."""
    import jwt

    from llmflow.auth.jwt import principal_from_claims

    auth = runtime.settings.auth
    if not auth.issuer:
        raise ConfigurationError("auth.issuer must be set for Keycloak SSO")
    token_url = _endpoint(sso, auth.issuer, auth.jwks_url, "token")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": login.redirect_uri,
        "client_id": sso.client_id,
        "code_verifier": login.verifier,
    }
    if sso.client_secret is not None:
        form["client_secret"] = sso.client_secret.get_secret_value()
    try:
        async with httpx.AsyncClient(timeout=sso.timeout_s, transport=transport) as client:
            response = await client.post(token_url, data=form)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"Keycloak token endpoint unreachable: {exc}") from exc
    if response.status_code != 200:
        try:
            err = response.json().get("error_description") or response.json().get("error")
        except ValueError:
            err = response.text[:200]
        raise Unauthorized(f"Keycloak refused the authorization code: {err}")
    tokens = response.json()
    access, id_token = tokens.get("access_token"), tokens.get("id_token")
    if not isinstance(access, str) or not isinstance(id_token, str):
        raise Unauthorized("Keycloak's token response lacks access_token or id_token")
    verifier = await runtime.jwt_verifier()
    claims = await verifier.verify(access)
    principal = principal_from_claims(claims, auth.tenant_claim)
    # The ID token: same keys, audience = this client, our nonce (replay of another login).
    try:
        header = jwt.get_unverified_header(id_token)
        key = await verifier.jwks.signing_key(str(header.get("kid")), str(header.get("alg")))
        id_claims: dict[str, Any] = jwt.decode(
            id_token,
            key=key,
            algorithms=auth.algorithms,
            audience=sso.client_id,
            issuer=auth.issuer,
            leeway=auth.leeway_s,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"ID token does not verify ({type(exc).__name__})") from None
    if not hmac.compare_digest(str(id_claims.get("nonce", "")).encode(), login.nonce.encode()):
        raise Unauthorized("ID token nonce does not match this login")
    if id_claims.get("sub") != claims.get("sub"):
        raise Unauthorized("ID token and access token belong to different users")
    if login.tenant_hint and login.tenant_hint != principal.tenant_id:
        raise Forbidden(
            f"you signed in as a member of tenant {principal.tenant_id!r}, not "
            f"{login.tenant_hint!r}"
        )
    email = id_claims.get("email") or claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Forbidden("the Keycloak account has no email address; Dify accounts need one")
    verified = bool(id_claims.get("email_verified", claims.get("email_verified", False)))
    name = id_claims.get("name") or claims.get("preferred_username") or email.split("@")[0]
    return VerifiedLogin(principal, email.lower(), str(name), verified)


# ---------------------------------------------------------------- provisioning


_GET_ACCOUNT = text(
    "SELECT password_sealed FROM dify_sso_accounts WHERE tenant_id = :tenant AND email = :email"
)
_PUT_ACCOUNT = text(
    """
    INSERT INTO dify_sso_accounts (tenant_id, email, keycloak_subject, dify_role, password_sealed)
    VALUES (:tenant, :email, :subject, :role, :sealed)
    ON CONFLICT (tenant_id, email) DO NOTHING
    """
)
_TOUCH_ACCOUNT = text(
    """
    UPDATE dify_sso_accounts SET last_login_at = now(), dify_role = :role,
        dify_account_id = :account_id, keycloak_subject = :subject
    WHERE tenant_id = :tenant AND email = :email
    """
)


@dataclass(slots=True)
class ProvisionResult:
    """What the bridge did for one login."""

    session: DifySession
    role: str
    created: bool
    role_changed: bool
    web_url: str


def _context(tenant: str, email: str) -> str:
    return f"dify-sso:{tenant}:{email}"


class DifySsoBridge:
    """Finds or provisions Dify accounts and logs them in (step 3 of the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        settings: DifySsoSettings,
        box: SecretBox,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.box = box
        self._transport = transport

    def _clients(self, instance: DifyInstance) -> tuple[DifyMembers, DifyAccountLogin]:
        timeout = httpx.Timeout(self.settings.timeout_s, connect=5.0)
        console = DifyConsole.with_admin_key(
            instance.api_url,
            instance.admin_key(),
            instance.workspace_id,
            transport=self._transport,
            timeout=timeout,
        )
        key = instance.field_encryption_key
        login = DifyAccountLogin(
            instance.api_url,
            field_encryption_key=key.get_secret_value() if key else None,
            transport=self._transport,
            timeout=timeout,
        )
        return DifyMembers(console), login

    async def _password(self, tenant: str, email: str, subject: str, role: str) -> tuple[str, bool]:
        """The user's sealed Dify password, created (and stored first) when there is none."""
        async with self.runtime.sessions() as s:
            row = (await s.execute(_GET_ACCOUNT, {"tenant": tenant, "email": email})).first()
            if row is not None:
                return self.box.open(row[0], _context(tenant, email)), False
            password = new_password()
            sealed = self.box.seal(password, _context(tenant, email))
            params = {
                "tenant": tenant,
                "email": email,
                "subject": subject,
                "role": role,
                "sealed": sealed,
            }
            await s.execute(_PUT_ACCOUNT, params)
            await s.commit()
        # A concurrent first login may have won the insert: read what is stored.
        async with self.runtime.sessions() as s:
            row = (await s.execute(_GET_ACCOUNT, {"tenant": tenant, "email": email})).one()
        return self.box.open(row[0], _context(tenant, email)), True

    async def _known(self, tenant: str, email: str) -> bool:
        async with self.runtime.sessions() as s:
            row = (await s.execute(_GET_ACCOUNT, {"tenant": tenant, "email": email})).first()
        return row is not None

    async def provision(self, login: VerifiedLogin) -> ProvisionResult:
        """The Dify session of a verified Keycloak user (creating the account if needed)."""
        principal = login.principal
        tenant = principal.tenant_id
        if self.settings.require_verified_email and not login.email_verified:
            raise Forbidden("the Keycloak account's email is not verified")
        role = dify_role_for(principal.roles)
        if role is None:
            raise Forbidden(
                "no Keycloak realm role of this user grants Dify access "
                "(platform-admin, operator, developer or viewer)"
            )
        s = self.runtime.settings
        namespace = s.tenancy.namespace_prefix + tenant
        instance = self.settings.instance(tenant, s.dify, namespace)
        members, account = self._clients(instance)
        try:
            return await self._provision(login, role, instance, members, account)
        except DifyError as exc:
            log.warning("Dify refused SSO provisioning: %s", exc)
            if exc.status in (401, 403) and exc.path.startswith("/console/api/workspaces"):
                raise ServiceUnavailable(
                    "Dify refused LLMFlow's admin API key: check ADMIN_API_KEY_ENABLE and the key"
                ) from exc
            raise ServiceUnavailable(f"Dify did not complete the login: {exc.message}") from exc
        finally:
            await members.console.aclose()
            await account.aclose()

    async def _provision(
        self,
        login: VerifiedLogin,
        role: str,
        instance: DifyInstance,
        members: DifyMembers,
        account: DifyAccountLogin,
    ) -> ProvisionResult:
        tenant, email = login.principal.tenant_id, login.email
        member = await members.find(email)
        created = role_changed = False
        if member is not None and member.role == "owner":
            raise Conflict(
                "this email is the Dify workspace owner's; the owner signs in to Dify directly"
            )
        if member is not None and not await self._known(tenant, email):
            raise Conflict(
                f"a Dify account for {email} exists but was not created by LLMFlow's sign-on; "
                "an administrator must remove it from the workspace first"
            )
        if member is not None and member.status == "pending":
            # Invited but never activated (an interrupted first login): invite afresh.
            await members.remove(member.id)
            member = None
        if member is None:
            password, created = await self._password(tenant, email, login.principal.subject, role)
            invitation = await members.invite(email, role, self.settings.interface_language)
            if invitation.token is None:
                raise DifyError(
                    502, "no_invite_token", "invitation without token", method="POST", path=""
                )
            await account.login(email, password, invite_token=invitation.token)
            await account.activate(
                email=email,
                token=invitation.token,
                workspace_id=invitation.workspace_id or instance.workspace_id,
                name=login.display_name,
                interface_language=self.settings.interface_language,
                timezone=self.settings.timezone,
            )
            member = await members.find(email)
        else:
            password, _ = await self._password(tenant, email, login.principal.subject, role)
            if member.role != role:
                await members.update_role(member.id, role)
                role_changed = True
        session = await account.login(email, password)
        async with self.runtime.sessions() as s:
            await s.execute(
                _TOUCH_ACCOUNT,
                {
                    "tenant": tenant,
                    "email": email,
                    "role": role,
                    "account_id": member.id if member else None,
                    "subject": login.principal.subject,
                },
            )
            await s.commit()
        return ProvisionResult(session, role, created, role_changed, instance.web_url)


# ---------------------------------------------------------------- offboarding


class KeycloakDirectory:
    """Who may use a tenant's Dify, read from Keycloak's admin API (python-keycloak)."""

    def __init__(self, settings: KeycloakAdminSettings) -> None:
        self.settings = settings

    def _entitlements(self, tenant: str) -> dict[str, str]:
        from llmflow.tenancy.keycloak import connect

        admin = connect(self.settings)
        group_path = f"/tenants/{tenant}"
        entitled: dict[str, str] = {}
        for user in admin.get_users({"q": f"tenant:{tenant}", "briefRepresentation": False}):
            email = user.get("email")
            if not user.get("enabled") or not isinstance(email, str) or not email:
                continue
            if tenant not in (user.get("attributes") or {}).get("tenant", []):
                continue
            groups = {g.get("path") for g in admin.get_user_groups(user["id"])}
            if group_path not in groups:
                continue
            roles = [r.get("name", "") for r in admin.get_realm_roles_of_user(user["id"])]
            role = dify_role_for(roles)
            if role is not None:
                entitled[email.lower()] = role
        return entitled

    async def entitlements(self, tenant: str) -> dict[str, str]:
        """email → Dify role of every user entitled to the tenant's Dify workspace."""
        return await asyncio.to_thread(self._entitlements, tenant)

    def _tenants(self) -> list[str]:
        from llmflow.tenancy.keycloak import connect
        from llmflow.tenancy.keycloak_template import TENANTS_GROUP

        admin = connect(self.settings)
        top = [
            g
            for g in admin.get_groups({"briefRepresentation": False})
            if g.get("name") == TENANTS_GROUP
        ]
        if not top:
            # Without the subtree nobody is entitled anywhere: refusing is safer than
            # offboarding every workspace because the realm is not provisioned (yet).
            raise ConfigurationError(
                f"realm {self.settings.realm!r} has no /{TENANTS_GROUP} group; run "
                "`llmflow tenant apply` first (it creates /tenants/<tenant> for each tenant)"
            )
        children = admin.get_group_children(top[0]["id"], {"briefRepresentation": False})
        return sorted(str(g["name"]) for g in children)

    async def tenants(self) -> list[str]:
        """The tenants of the realm: the ``/tenants/<tenant>`` groups ``llmflow tenant apply``
        keeps equal to tenants.yaml (created when declared, deleted when removed)."""
        return await asyncio.to_thread(self._tenants)


class EntitlementSource(Protocol):
    """Who may use a tenant's Dify (:class:`KeycloakDirectory`)."""

    async def entitlements(self, tenant: str) -> dict[str, str]: ...


async def _reconcile_instance(
    instance: DifyInstance,
    entitled: Mapping[str, str],
    protected: Iterable[str],
    *,
    dry_run: bool,
    transport: httpx.AsyncBaseTransport | None,
) -> ReconcileReport:
    console = DifyConsole.with_admin_key(
        instance.api_url, instance.admin_key(), instance.workspace_id, transport=transport
    )
    try:
        return await reconcile_members(
            DifyMembers(console), entitled, protected=protected, dry_run=dry_run
        )
    finally:
        await console.aclose()


async def offboard_tenant(
    sso: DifySsoSettings,
    tenant: str,
    entitled: Mapping[str, str],
    *,
    dry_run: bool = False,
    dify: DifySettings | None = None,
    namespace: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ReconcileReport:
    """Remove the members of ``tenant``'s Dify workspace that Keycloak no longer entitles,
    and align the roles of the others (``llmflow dify offboard``)."""
    instance = sso.instance(tenant, dify, namespace)
    return await _reconcile_instance(
        instance, entitled, sso.protected_members, dry_run=dry_run, transport=transport
    )


@dataclass(slots=True)
class WorkspaceOffboarding:
    """The outcome of offboarding one Dify workspace: the tenants it serves (one, except in
    shared mode), what changed, or why it failed (then nothing was changed there)."""

    tenants: list[str]
    api_url: str | None = None
    workspace_id: str | None = None
    report: ReconcileReport | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tenants": self.tenants,
            "api_url": self.api_url,
            "workspace_id": self.workspace_id,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.report is not None:
            out.update(self.report.to_dict())
        return out


def merge_entitlements(per_tenant: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """One workspace's entitlements from those of the tenants it serves; a person entitled
    in several keeps the strongest role."""
    merged: dict[str, str] = {}
    for entitled in per_tenant:
        for email, role in entitled.items():
            key = email.lower()
            current = merged.get(key)
            if current is None or DIFY_ROLE_RANK[role] > DIFY_ROLE_RANK[current]:
                merged[key] = role
    return merged


def configured_tenants(sso: DifySsoSettings, dify: DifySettings | None = None) -> set[str]:
    """Tenants with a Dify of their own in the settings (explicit SSO instances, wiring
    workspace ids or base URLs): offboarding covers them even once their Keycloak group is
    gone, so a removed tenant's still-running Dify loses its members."""
    names = {t for t in sso.instances if t != SHARED_INSTANCE}
    if dify is not None:
        names |= set(dify.workspace_ids) | set(dify.base_urls)
    return names


def _why(exc: Exception) -> str:
    return exc.detail if isinstance(exc, LLMFlowError) else f"{type(exc).__name__}: {exc}"


async def offboard_tenants(
    sso: DifySsoSettings,
    tenants: Iterable[str],
    directory: EntitlementSource,
    *,
    dry_run: bool = False,
    dify: DifySettings | None = None,
    namespace_prefix: str = "",
    only_workspace_of: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[WorkspaceOffboarding]:
    """Offboard every tenant of ``tenants`` (``llmflow dify offboard --all-tenants``).

    Tenants are grouped by the Dify workspace serving them: in ``shared`` mode one
    workspace serves every tenant, and reconciling it against one tenant's entitlements
    would remove everyone else's members, so each workspace is reconciled once against the
    union of its tenants' entitlements. A failure (no Dify configured, Keycloak or Dify
    unreachable, an error answer) is recorded for that workspace, which is then left
    unchanged, and the others are still processed. ``only_workspace_of`` restricts the run
    to the workspace serving that tenant (``--tenant``)."""
    results: list[WorkspaceOffboarding] = []
    groups: dict[tuple[str, str], list[str]] = {}
    instances: dict[tuple[str, str], DifyInstance] = {}
    for tenant in sorted(set(tenants)):
        try:
            instance = sso.instance(tenant, dify, namespace_prefix + tenant)
        except LLMFlowError as exc:
            if only_workspace_of in (None, tenant):
                results.append(WorkspaceOffboarding([tenant], error=_why(exc)))
            continue
        key = (instance.api_url.rstrip("/"), instance.workspace_id)
        groups.setdefault(key, []).append(tenant)
        instances.setdefault(key, instance)
    for key, served in groups.items():
        if only_workspace_of is not None and only_workspace_of not in served:
            continue
        result = WorkspaceOffboarding(served, api_url=key[0], workspace_id=key[1])
        try:
            entitled = merge_entitlements([await directory.entitlements(t) for t in served])
            result.report = await _reconcile_instance(
                instances[key],
                entitled,
                sso.protected_members,
                dry_run=dry_run,
                transport=transport,
            )
        except Exception as exc:  # one workspace's failure must not stop the others
            log.warning("offboarding %s failed", ", ".join(served), exc_info=True)
            result.error = _why(exc)
        results.append(result)
    return sorted(results, key=lambda r: r.tenants)


def login_details(result: ProvisionResult, login: VerifiedLogin) -> dict[str, Any]:
    """Audit details of one SSO login (no secrets, no tokens)."""
    return {
        "dify_role": result.role,
        "created": "yes" if result.created else "no",
        "role_changed": "yes" if result.role_changed else "no",
        "at": datetime.now(UTC).isoformat(),
        "roles": sorted(login.principal.roles),
    }
