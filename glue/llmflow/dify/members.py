"""Dify accounts of the SSO bridge: the ONE module that couples LLMFlow to Dify's account
internals, pinned to :data:`~llmflow.dify.client.DIFY_VERSION`.

Dify's community edition has no OIDC login and accepts only its own session tokens. Read
from Dify 1.14.2's source (``api/controllers/console/workspace/members.py``,
``api/controllers/console/auth/login.py``, ``api/controllers/console/auth/activate.py``,
``api/services/account_service.py``, ``api/libs/token.py``, ``api/constants/__init__.py``),
the least-coupled way to give a browser a Dify session without the user ever holding a Dify
password uses only documented console endpoints:

1. ``POST /console/api/workspaces/current/members/invite-email`` with the admin API key and
   ``X-WORKSPACE-ID`` (Dify acts as the workspace owner): ``{"emails": [e], "role": r,
   "language": l}`` → 201 ``{"result": "success", "invitation_results": [{"status":
   "success", "email": e, "url": "<CONSOLE_WEB_URL>/activate?email=<e>&token=<token>"}],
   "tenant_id": …}``. An account already in the workspace answers ``"url":
   "<CONSOLE_WEB_URL>/signin"`` (no token).
2. ``POST /console/api/login`` ``{"email", "password", "invite_token", "remember_me"}``: for an
   invited account without a password, ``AccountService.authenticate`` *sets* the password
   given with a valid invite token. LLMFlow sends a per-user random password (32 bytes,
   sealed in ``dify_sso_accounts``; the user never sees it).
3. ``POST /console/api/activate`` ``{"workspace_id", "email", "token", "name",
   "interface_language", "timezone"}``: the account becomes ``active`` with the Keycloak
   display name, and the invite token is revoked. (In 1.x ``/activate`` sets no password and
   issues no session; that is why step 2 comes first.)
4. ``POST /console/api/login`` ``{"email", "password", "remember_me"}`` → 200
   ``{"result": "success"}`` and three cookies: ``access_token`` (HttpOnly),
   ``refresh_token`` (HttpOnly) and ``csrf_token`` (readable by the console's JavaScript,
   which echoes it in ``X-CSRF-Token``). When ``CONSOLE_WEB_URL`` and ``CONSOLE_API_URL``
   are both https (and no ``COOKIE_DOMAIN`` is set) the names carry the ``__Host-`` prefix.
   A login of an account in no workspace answers 200 ``{"result": "fail", "data":
   "workspace not found, …"}``.
5. Role changes ``PUT /console/api/workspaces/current/members/{id}/update-role``
   ``{"role"}``, removal ``DELETE /console/api/workspaces/current/members/{id}``, the list
   ``GET /console/api/workspaces/current/members`` → ``{"result", "accounts": [{"id",
   "name", "email", "role", "status", …}]}``.

Prerequisites in Dify's configuration: ``ADMIN_API_KEY_ENABLE=true`` with ``ADMIN_API_KEY``,
``ENABLE_EMAIL_PASSWORD_LOGIN=true``. With ``ENABLE_FIELD_ENCRYPTION=true`` the console
expects the password field encrypted the way its web app does (crypto-js ``AES.encrypt``
with ``ENCRYPTION_KEY``: ``"Salted__" ‖ salt ‖ AES-256-CBC``, key and IV from OpenSSL's
``EVP_BytesToKey`` with MD5); :func:`crypto_js_encrypt` does that when the instance's
``field_encryption_key`` is set.

The contract tests (``tests/dify_members_fake.py``, ``tests/unit/test_dify_sso_contract.py``)
replay these endpoints; a Dify upgrade is checked by re-reading these files and re-running
them (docs/dify-sso.md).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from llmflow.dify.client import DIFY_VERSION, DifyConsole, DifyError

log = logging.getLogger(__name__)

COUPLED_DIFY_VERSION = DIFY_VERSION
"""The Dify version whose account endpoints this module replays (see module docstring)."""

MEMBERS = "/workspaces/current/members"
INVITE = "/workspaces/current/members/invite-email"
LOGIN = "/login"
ACTIVATE = "/activate"

COOKIE_NAMES = ("access_token", "refresh_token", "csrf_token")
"""Dify's console session cookies (``api/constants/__init__.py``), ``__Host-`` prefixed on
https deployments."""
CSRF_HEADER = "X-CSRF-Token"

DIFY_ROLE_RANK = {"normal": 0, "editor": 1, "admin": 2}
"""Dify workspace roles the bridge assigns, weakest first (``owner`` is never assigned and
``dataset_operator`` is not mapped)."""
REALM_TO_DIFY_ROLE: dict[str, str] = {
    "platform-admin": "admin",
    "operator": "admin",
    "developer": "editor",
    "viewer": "normal",
}


def dify_role_for(realm_roles: Iterable[str]) -> str | None:
    """The Dify role of a user with these Keycloak realm roles (the highest wins); None when
    no role grants Dify access."""
    mapped = [REALM_TO_DIFY_ROLE[r] for r in realm_roles if r in REALM_TO_DIFY_ROLE]
    return max(mapped, key=DIFY_ROLE_RANK.__getitem__) if mapped else None


def new_password() -> str:
    """A per-user Dify password: 32 random bytes, with a letter and a digit (Dify's password
    rule ``^(?=.*[a-zA-Z])(?=.*\\d).{8,}$`` applies where passwords are validated)."""
    return "Lf1" + secrets.token_urlsafe(32)


def crypto_js_encrypt(plaintext: str, passphrase: str) -> str:
    """What crypto-js ``AES.encrypt(text, passphrase).toString()`` produces, which Dify's
    ``FieldEncryption.decrypt_field`` reverses (AES-256-CBC, PKCS#7, EVP_BytesToKey/MD5)."""
    salt = os.urandom(8)
    derived, block = b"", b""
    while len(derived) < 48:
        # MD5 is what crypto-js's and OpenSSL's EVP_BytesToKey use: a format, not a choice.
        block = hashlib.md5(block + passphrase.encode() + salt).digest()
        derived += block
    key, iv = derived[:32], derived[32:48]
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(data) + encryptor.finalize()
    return base64.b64encode(b"Salted__" + salt + sealed).decode()


@dataclass(frozen=True, slots=True)
class DifyMember:
    """One row of ``GET /workspaces/current/members``."""

    id: str
    email: str
    name: str
    role: str
    status: str

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> DifyMember:
        return cls(
            id=str(item.get("id") or ""),
            email=str(item.get("email") or "").lower(),
            name=str(item.get("name") or ""),
            role=str(item.get("role") or ""),
            status=str(item.get("status") or ""),
        )


@dataclass(frozen=True, slots=True)
class Invitation:
    """An invitation result: the activation token, or None when already a member."""

    email: str
    token: str | None
    workspace_id: str | None


@dataclass(frozen=True, slots=True)
class DifyCookie:
    """A cookie Dify set on login, with the attributes to set it again for the browser."""

    name: str
    value: str
    max_age: int | None
    path: str
    secure: bool
    httponly: bool
    samesite: str
    domain: str | None = None


@dataclass(slots=True)
class DifySession:
    """A console session: the cookies a browser needs, as Dify issued them."""

    cookies: list[DifyCookie] = field(default_factory=list)

    def cookie(self, base_name: str) -> DifyCookie | None:
        """The cookie named ``base_name`` with or without the ``__Host-`` prefix."""
        for c in self.cookies:
            if c.name in (base_name, "__Host-" + base_name):
                return c
        return None

    @property
    def complete(self) -> bool:
        return all(self.cookie(n) is not None for n in COOKIE_NAMES)


class DifyLoginRefused(DifyError):
    """Dify answered a login with ``{"result": "fail"}`` (e.g. the account is in no
    workspace any more)."""


def parse_session(response: httpx.Response) -> DifySession:
    """The console cookies of a login response's ``Set-Cookie`` headers."""
    session = DifySession()
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            base = name.removeprefix("__Host-")
            if base not in COOKIE_NAMES:
                continue
            max_age = morsel["max-age"]
            session.cookies.append(
                DifyCookie(
                    name=name,
                    value=morsel.value,
                    max_age=int(max_age) if str(max_age).isdigit() else None,
                    path=morsel["path"] or "/",
                    secure=bool(morsel["secure"]),
                    httponly=bool(morsel["httponly"]),
                    samesite=str(morsel["samesite"] or "Lax"),
                    domain=morsel["domain"] or None,
                )
            )
    return session


class DifyMembers:
    """Workspace membership through the admin API key (Dify acts as the workspace owner)."""

    def __init__(self, console: DifyConsole) -> None:
        self.console = console

    async def list(self) -> list[DifyMember]:
        body = await self.console.request("GET", MEMBERS)
        accounts = body.get("accounts") if isinstance(body, dict) else None
        return [DifyMember.from_json(a) for a in accounts or [] if isinstance(a, dict)]

    async def find(self, email: str) -> DifyMember | None:
        email = email.lower()
        return next((m for m in await self.list() if m.email == email), None)

    async def invite(self, email: str, role: str, language: str) -> Invitation:
        """Invite ``email`` with ``role``; the activation token from the invitation URL."""
        body = await self.console.request(
            "POST", INVITE, json={"emails": [email], "role": role, "language": language}
        )
        results = body.get("invitation_results") if isinstance(body, dict) else None
        result = next(
            (r for r in results or [] if isinstance(r, dict) and r.get("email") == email.lower()),
            None,
        )
        if result is None or result.get("status") != "success":
            message = str((result or {}).get("message") or "no invitation result")
            raise DifyError(502, "invite_failed", message, method="POST", path=INVITE)
        query = parse_qs(urlsplit(str(result.get("url") or "")).query)
        tokens = query.get("token") or []
        token = tokens[0] if tokens else None
        workspace = body.get("tenant_id") if isinstance(body, dict) else None
        return Invitation(email.lower(), token, str(workspace) if workspace else None)

    async def update_role(self, member_id: str, role: str) -> None:
        await self.console.request("PUT", f"{MEMBERS}/{member_id}/update-role", json={"role": role})

    async def remove(self, member_id: str) -> None:
        await self.console.request("DELETE", f"{MEMBERS}/{member_id}")


class DifyAccountLogin:
    """The unauthenticated console endpoints: password login and invitation activation."""

    def __init__(
        self,
        base_url: str,
        *,
        field_encryption_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"transport": transport}
        if timeout is not None:
            kwargs["timeout"] = timeout
        self.console = DifyConsole(base_url, {}, **kwargs)
        self._field_key = field_encryption_key

    async def aclose(self) -> None:
        await self.console.aclose()

    async def login(
        self, email: str, password: str, invite_token: str | None = None
    ) -> DifySession:
        """A console session for ``email``; sets the password when ``invite_token`` is valid
        and the account has none yet (step 2 of the module docstring)."""
        sent = crypto_js_encrypt(password, self._field_key) if self._field_key else password
        payload: dict[str, Any] = {"email": email, "password": sent, "remember_me": True}
        if invite_token:
            payload["invite_token"] = invite_token
        async with self.console.stream("POST", LOGIN, json=payload) as response:
            await response.aread()
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise DifyError(
                response.status_code,
                str(body.get("code") or f"http_{response.status_code}"),
                str(body.get("message") or "login refused"),
                method="POST",
                path=LOGIN,
            )
        body = response.json() if response.content else {}
        if not isinstance(body, dict) or body.get("result") != "success":
            data = body.get("data") if isinstance(body, dict) else None
            raise DifyLoginRefused(
                403, "login_failed", str(data or "login failed"), method="POST", path=LOGIN
            )
        session = parse_session(response)
        if not session.complete:
            raise DifyError(
                502,
                "session_cookies_missing",
                f"Dify's login set {sorted(c.name for c in session.cookies)}, expected "
                f"{list(COOKIE_NAMES)} (Dify {COUPLED_DIFY_VERSION} contract)",
                method="POST",
                path=LOGIN,
            )
        return session

    async def activate(
        self,
        *,
        email: str,
        token: str,
        workspace_id: str | None,
        name: str,
        interface_language: str,
        timezone: str,
    ) -> None:
        """Mark the invited account active with its display name (step 3)."""
        await self.console.request(
            "POST",
            ACTIVATE,
            json={
                "workspace_id": workspace_id,
                "email": email,
                "token": token,
                "name": name[:30],
                "interface_language": interface_language,
                "timezone": timezone,
            },
        )


@dataclass(slots=True)
class ReconcileReport:
    """What :func:`reconcile_members` changed (or would change, with ``dry_run``)."""

    removed: list[str] = field(default_factory=list)
    role_changed: list[tuple[str, str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "role_changed": [{"email": e, "from": a, "to": b} for e, a, b in self.role_changed],
            "kept": self.kept,
        }


async def reconcile_members(
    members: DifyMembers,
    entitled: Mapping[str, str],
    *,
    protected: Iterable[str] = (),
    dry_run: bool = False,
) -> ReconcileReport:
    """Make the workspace's members match Keycloak: remove every member whose email is not
    entitled (user disabled or deleted, out of the tenant group, no mapped role), and set the
    mapped role of the others. The owner and ``protected`` emails are never touched."""
    keep = {e.lower() for e in protected}
    wanted = {e.lower(): r for e, r in entitled.items()}
    report = ReconcileReport()
    for member in await members.list():
        if member.role == "owner" or member.email in keep:
            report.kept.append(member.email)
            continue
        role = wanted.get(member.email)
        if role is None:
            if not dry_run:
                await members.remove(member.id)
            report.removed.append(member.email)
            continue
        if member.role != role:
            if not dry_run:
                await members.update_role(member.id, role)
            report.role_changed.append((member.email, member.role, role))
        report.kept.append(member.email)
    return report
