"""Local stand-ins for the SSO bridge's two servers that cannot run here.

:class:`FakeDifyConsole` replays Dify 1.14.2's account and membership contract (read from
``api/controllers/console/workspace/members.py``, ``auth/login.py``, ``auth/activate.py``,
``services/account_service.py``, ``libs/token.py``, ``constants/__init__.py``):

* admin API key: ``Authorization: Bearer <ADMIN_API_KEY>`` + ``X-WORKSPACE-ID`` acts as the
  workspace owner; a wrong key is 401 ``unauthorized``.
* ``GET /console/api/workspaces/current/members`` → ``{"result": "success", "accounts":
  [{"id", "name", "avatar", "email", "last_login_at", "created_at", "role", "status"}]}``.
* ``POST …/members/invite-email`` ``{"emails", "role", "language"}``: roles other than
  ``admin``/``editor``/``normal``/``dataset_operator`` → 400 ``invalid-role``; a new email
  gets a ``pending`` account without password and ``"url": "<web>/activate?email=…&token=…"``,
  an account already in the workspace ``"url": "<web>/signin"``; 201 with
  ``invitation_results`` and ``tenant_id``. Emails are lower-cased.
* ``PUT …/members/{id}/update-role`` ``{"role"}``; ``DELETE …/members/{id}`` (the owner → 403
  ``forbidden``) → 200 ``{"result": "success", "tenant_id"}``.
* ``POST /console/api/login`` ``{"email", "password", "remember_me", "invite_token"}``: with a
  valid invite token for that email and an account without password, the password is set
  (``AccountService.authenticate``); a wrong password → 401 ``authentication_failed``; an
  account in no workspace → 200 ``{"result": "fail", "data": "workspace not found, …"}``;
  success → 200 ``{"result": "success"}`` with ``access_token``/``refresh_token`` (HttpOnly)
  and ``csrf_token`` cookies, ``__Host-`` prefixed when ``secure`` (https console).
* ``POST /console/api/activate`` ``{"workspace_id", "email", "token", "name",
  "interface_language", "timezone"}`` → sets them, ``active``, revokes the token; an unknown
  token → 400 ``already_activate``. ``GET /console/api/activate/check``.
* ``GET /console/api/account/profile`` with the session cookie; a ``POST
  /console/api/account/name`` needs ``X-CSRF-Token`` equal to the ``csrf_token`` cookie.

:class:`FakeKeycloakOidc` replays Keycloak's authorization-code endpoints of a realm
(``/realms/{realm}/protocol/openid-connect/auth|token|certs``): PKCE S256 checked at the token
endpoint (``invalid_grant`` "PKCE verification failed"), codes single-use, confidential
client authentication (401 ``unauthorized_client``), the ID token with ``nonce``, ``typ:
ID``, ``aud`` = the client.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from keycloak_issuer import KeycloakRealm
from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

ROLES = ("owner", "admin", "editor", "normal", "dataset_operator")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)


@dataclass
class Account:
    id: str
    email: str
    name: str
    password: str | None = None
    status: str = "pending"
    interface_language: str = "en-US"
    timezone: str = "UTC"


@dataclass
class Workspace:
    id: str
    name: str
    members: dict[str, str] = field(default_factory=dict)  # account id → role


class FakeDifyConsole(LocalServer):
    """One Dify instance with one workspace (instance-per-tenant)."""

    def __init__(self, admin_key: str, *, secure: bool = False, web_url: str = "") -> None:
        super().__init__()
        self.admin_key = admin_key
        self.secure = secure
        self.web_url = web_url or "https://dify.test"
        self.accounts: dict[str, Account] = {}
        self.invites: dict[str, tuple[str, str]] = {}  # token → (workspace id, email)
        self.sessions: dict[str, str] = {}  # access token → account id
        self.csrf: dict[str, str] = {}  # csrf token → account id
        self.log: list[tuple[str, str]] = []
        owner = Account(str(uuid.uuid4()), "owner@llmflow.test", "owner", "ownerpass", "active")
        self.accounts[owner.id] = owner
        self.workspace = Workspace(str(uuid.uuid4()), "dept-hr", {owner.id: "owner"})
        c = "/console/api"
        self.app = Starlette(
            routes=[
                Route(c + "/workspaces/current/members", self.members, methods=["GET"]),
                Route(
                    c + "/workspaces/current/members/invite-email", self.invite, methods=["POST"]
                ),
                Route(
                    c + "/workspaces/current/members/{id}/update-role",
                    self.update_role,
                    methods=["PUT"],
                ),
                Route(c + "/workspaces/current/members/{id}", self.remove, methods=["DELETE"]),
                Route(c + "/login", self.login, methods=["POST"]),
                Route(c + "/activate/check", self.activate_check, methods=["GET"]),
                Route(c + "/activate", self.activate, methods=["POST"]),
                Route(c + "/account/profile", self.profile, methods=["GET"]),
                Route(c + "/account/name", self.set_name, methods=["POST"]),
            ]
        )

    # ------------------------------------------------------------------ helpers

    def by_email(self, email: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.email == email.lower()), None)

    def role_of(self, email: str) -> str | None:
        account = self.by_email(email)
        return self.workspace.members.get(account.id) if account else None

    def _cookie(self, name: str) -> str:
        return ("__Host-" + name) if self.secure else name

    def _owner(self, request: Request) -> JSONResponse | None:
        self.log.append((request.method, request.url.path))
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.admin_key}":
            return _error(401, "unauthorized", "Invalid token")
        if request.headers.get("x-workspace-id") != self.workspace.id:
            return _error(401, "unauthorized", "Invalid workspace")
        return None

    def _session(self, request: Request) -> Account | None:
        token = request.cookies.get(self._cookie("access_token"))
        account_id = self.sessions.get(token or "")
        if account_id is None or account_id not in self.workspace.members:
            return None
        return self.accounts[account_id]

    # ------------------------------------------------------------------ members

    async def members(self, request: Request) -> Response:
        if (denied := self._owner(request)) is not None:
            return denied
        accounts = []
        for account_id, role in self.workspace.members.items():
            a = self.accounts[account_id]
            accounts.append(
                {
                    "id": a.id,
                    "name": a.name,
                    "avatar": None,
                    "email": a.email,
                    "last_login_at": None,
                    "created_at": int(time.time()),
                    "role": role,
                    "status": a.status,
                }
            )
        return JSONResponse({"result": "success", "accounts": accounts})

    async def invite(self, request: Request) -> Response:
        if (denied := self._owner(request)) is not None:
            return denied
        body = await request.json()
        role = body.get("role")
        if role not in ROLES or role == "owner":
            return JSONResponse({"code": "invalid-role", "message": "Invalid role"}, 400)
        results = []
        for email in dict.fromkeys(e.lower() for e in body.get("emails") or []):
            account = self.by_email(email)
            if account is not None and account.id in self.workspace.members:
                results.append(
                    {"status": "success", "email": email, "url": f"{self.web_url}/signin"}
                )
                continue
            if account is None:
                account = Account(str(uuid.uuid4()), email, email.split("@")[0])
                account.interface_language = body.get("language") or "en-US"
                self.accounts[account.id] = account
            self.workspace.members[account.id] = role
            token = str(uuid.uuid4())
            self.invites[token] = (self.workspace.id, email)
            results.append(
                {
                    "status": "success",
                    "email": email,
                    "url": f"{self.web_url}/activate?email={quote(email)}&token={token}",
                }
            )
        return JSONResponse(
            {"result": "success", "invitation_results": results, "tenant_id": self.workspace.id},
            status_code=201,
        )

    async def update_role(self, request: Request) -> Response:
        if (denied := self._owner(request)) is not None:
            return denied
        role = (await request.json()).get("role")
        if role not in ROLES:
            return JSONResponse({"code": "invalid-role", "message": "Invalid role"}, 400)
        member = request.path_params["id"]
        if member not in self.workspace.members:
            return _error(404, "not_found", "Member not found")
        self.workspace.members[member] = role
        return JSONResponse({"result": "success"})

    async def remove(self, request: Request) -> Response:
        if (denied := self._owner(request)) is not None:
            return denied
        member = request.path_params["id"]
        if member not in self.accounts:
            return _error(404, "not_found", "Not Found")
        if member not in self.workspace.members:
            return JSONResponse(
                {"code": "member-not-found", "message": "Member not in tenant."}, 404
            )
        if self.workspace.members[member] == "owner":
            return JSONResponse({"code": "forbidden", "message": "No permission."}, 403)
        del self.workspace.members[member]
        self.sessions = {t: a for t, a in self.sessions.items() if a != member}
        return JSONResponse({"result": "success", "tenant_id": self.workspace.id})

    # ------------------------------------------------------------------ login

    async def login(self, request: Request) -> Response:
        body = await request.json()
        email = str(body.get("email") or "").lower()
        password = body.get("password")
        invite = body.get("invite_token")
        account = self.by_email(email)
        if invite:
            found = self.invites.get(invite)
            if found is None or found[1] != email:
                return _error(400, "invalid_email", "Invalid email address.")
        if account is None:
            return _error(401, "authentication_failed", "Invalid email or password.")
        if password and invite and account.password is None:
            account.password = password
        if account.password is None or account.password != password:
            return _error(401, "authentication_failed", "Invalid email or password.")
        if not invite and account.status == "pending":
            account.status = "active"
        if account.id not in self.workspace.members:
            return JSONResponse(
                {
                    "result": "fail",
                    "data": "workspace not found, please "
                    "contact system admin to invite you to join in a workspace",
                }
            )
        access, refresh, csrf = (secrets.token_urlsafe(24) for _ in range(3))
        self.sessions[access] = account.id
        self.csrf[csrf] = account.id
        response = JSONResponse({"result": "success"})
        for name, value, http_only, max_age in (
            ("access_token", access, True, 3600),
            ("refresh_token", refresh, True, 30 * 86400),
            ("csrf_token", csrf, False, 3600),
        ):
            response.set_cookie(
                self._cookie(name),
                value,
                max_age=max_age,
                path="/",
                secure=self.secure,
                httponly=http_only,
                samesite="lax",
            )
        return response

    async def activate_check(self, request: Request) -> Response:
        found = self.invites.get(request.query_params.get("token", ""))
        if found is None:
            return JSONResponse({"is_valid": False})
        return JSONResponse(
            {
                "is_valid": True,
                "data": {
                    "workspace_name": self.workspace.name,
                    "workspace_id": found[0],
                    "email": found[1],
                },
            }
        )

    async def activate(self, request: Request) -> Response:
        body = await request.json()
        found = self.invites.get(body.get("token", ""))
        if found is None or (body.get("email") and body["email"].lower() != found[1]):
            return _error(
                403,
                "already_activate",
                "Auth Token is invalid or account already activated, please check again.",
            )
        name = body.get("name")
        if not isinstance(name, str) or not name or len(name) > 30:
            return _error(400, "invalid_param", "name: at most 30 characters")
        del self.invites[body["token"]]
        account = self.by_email(found[1])
        assert account is not None
        account.name = name
        account.interface_language = body["interface_language"]
        account.timezone = body["timezone"]
        account.status = "active"
        return JSONResponse({"result": "success"})

    async def profile(self, request: Request) -> Response:
        account = self._session(request)
        if account is None:
            return _error(401, "unauthorized", "Invalid token")
        return JSONResponse(
            {
                "id": account.id,
                "name": account.name,
                "email": account.email,
                "interface_language": account.interface_language,
                "timezone": account.timezone,
                "role": self.workspace.members[account.id],
            }
        )

    async def set_name(self, request: Request) -> Response:
        account = self._session(request)
        if account is None:
            return _error(401, "unauthorized", "Invalid token")
        header = request.headers.get("x-csrf-token")
        cookie = request.cookies.get(self._cookie("csrf_token"))
        if not header or header != cookie or self.csrf.get(header) != account.id:
            return _error(401, "unauthorized", "CSRF token is missing or invalid.")
        account.name = (await request.json())["name"]
        return JSONResponse({"result": "success"})


# ---------------------------------------------------------------------- Keycloak OIDC


@dataclass
class KeycloakUser:
    username: str
    tenant: str | None
    roles: tuple[str, ...]
    email: str
    name: str = "Minji Kim"
    email_verified: bool = True


class FakeKeycloakOidc(LocalServer):
    """A realm's authorization-code flow; ``login_as`` picks who signs in at ``/auth``."""

    def __init__(self, realm: KeycloakRealm, client_id: str, client_secret: str) -> None:
        super().__init__()
        self.realm = realm
        self.client_id = client_id
        self.client_secret = client_secret
        self.user: KeycloakUser | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        base = f"/realms/{realm.name}/protocol/openid-connect"
        self.app = Starlette(
            routes=[
                Route(base + "/auth", self.auth, methods=["GET"]),
                Route(base + "/token", self.token, methods=["POST"]),
                Route(base + "/certs", self.certs, methods=["GET"]),
            ]
        )

    def login_as(self, user: KeycloakUser) -> None:
        self.user = user

    async def certs(self, request: Request) -> Response:
        return JSONResponse(self.realm.jwks())

    async def auth(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return Response("Client not found.", status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return Response("Missing parameter: code_challenge_method", status_code=400)
        if self.user is None:
            return Response("no user signs in", status_code=400)
        code = f"{uuid.uuid4()}.{uuid.uuid4()}.{uuid.uuid4()}"
        self.codes[code] = {
            "user": self.user,
            "redirect_uri": q["redirect_uri"],
            "challenge": q["code_challenge"],
            "nonce": q.get("nonce"),
            "scope": q.get("scope", ""),
        }
        target = (
            q["redirect_uri"]
            + "?"
            + urlencode(
                {
                    "state": q.get("state", ""),
                    "session_state": str(uuid.uuid4()),
                    "iss": self.realm.issuer,
                    "code": code,
                }
            )
        )
        return RedirectResponse(target, status_code=302)

    async def token(self, request: Request) -> Response:
        form = dict(await request.form())
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return JSONResponse(
                {
                    "error": "unauthorized_client",
                    "error_description": "Invalid client or Invalid client credentials",
                },
                401,
            )
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Code not valid"}, 400
            )
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Incorrect redirect_uri"}, 400
            )
        verifier = str(form.get("code_verifier") or "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if digest.rstrip(b"=").decode() != grant["challenge"]:
            return JSONResponse(
                {
                    "error": "invalid_grant",
                    "error_description": "PKCE verification failed: Code mismatch",
                },
                400,
            )
        user: KeycloakUser = grant["user"]
        claims = self.realm.claims(
            tenant=user.tenant, roles=user.roles, username=user.username, azp=self.client_id
        )
        claims["email"], claims["name"] = user.email, user.name
        claims["email_verified"] = user.email_verified
        id_claims = {
            "exp": claims["exp"],
            "iat": claims["iat"],
            "auth_time": claims["auth_time"],
            "jti": str(uuid.uuid4()),
            "iss": self.realm.issuer,
            "aud": self.client_id,
            "sub": claims["sub"],
            "typ": "ID",
            "azp": self.client_id,
            "nonce": grant["nonce"],
            "sid": claims["sid"],
            "acr": "1",
            "email_verified": user.email_verified,
            "name": user.name,
            "preferred_username": user.username,
            "email": user.email,
        }
        if user.tenant:
            id_claims["tenant"] = user.tenant
        return JSONResponse(
            {
                "access_token": self.realm.token(claims),
                "expires_in": 300,
                "refresh_expires_in": 1800,
                "refresh_token": secrets.token_urlsafe(32),
                "token_type": "Bearer",
                "id_token": self.realm.token(id_claims),
                "not-before-policy": 0,
                "session_state": claims["sid"],
                "scope": grant["scope"],
            }
        )
