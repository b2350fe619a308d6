"""A fake Keycloak 26 admin REST server: the endpoints python-keycloak calls for provisioning.

Keycloak itself cannot run in the unit-test environment, so this replays its documented
contract (https://www.keycloak.org/docs-api/latest/rest-api/): status codes (201 + Location
on create, 204 on update/delete, 409 on duplicates, 404 with ``{"error": ...}``, 401 without
a bearer token), representation shapes, and the behaviours provisioning depends on:

* a realm created through ``POST /admin/realms`` gets the built-in client scopes, the
  ``default-roles-<realm>`` role and the default declarative user profile;
* user attributes the user profile does not declare are dropped silently (unmanaged
  attribute policy disabled, the Keycloak ≥ 24 default), declared ones are validated;
* ``PUT /users/profile`` replaces the whole document and refuses one without ``username``
  or ``email``;
* confidential clients get a generated secret; a client with ``serviceAccountsEnabled`` gets
  a ``service-account-<clientId>`` user, invisible to ``GET /users``;
* ``GET /users?q=name:value`` searches attributes; ``GET /groups`` returns top-level groups
  with ``subGroupCount`` (children via ``/groups/{id}/children``).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ADMIN_USER = "admin"
ADMIN_PASSWORD = "fake-admin-password"
BUILTIN_SCOPES = ("acr", "basic", "email", "profile", "roles", "web-origins", "offline_access")
DEFAULT_DEFAULT_SCOPES = ("acr", "basic", "email", "profile", "roles", "web-origins")

Rep = dict[str, Any]


def _default_user_profile() -> Rep:
    perms = {"view": ["admin", "user"], "edit": ["admin", "user"]}
    return {
        "attributes": [
            {
                "name": "username",
                "displayName": "${username}",
                "validations": {"length": {"min": 3, "max": 255}},
                "permissions": perms,
                "multivalued": False,
            },
            {
                "name": "email",
                "displayName": "${email}",
                "validations": {"email": {}, "length": {"max": 255}},
                "required": {"roles": ["user"]},
                "permissions": perms,
                "multivalued": False,
            },
            {"name": "firstName", "displayName": "${firstName}", "permissions": perms},
            {"name": "lastName", "displayName": "${lastName}", "permissions": perms},
        ],
        "groups": [{"name": "user-metadata", "displayHeader": "User metadata"}],
    }


@dataclass
class RealmState:
    rep: Rep
    roles: dict[str, Rep] = field(default_factory=dict)
    scopes: dict[str, Rep] = field(default_factory=dict)
    default_default_scopes: list[str] = field(default_factory=list)
    clients: dict[str, Rep] = field(default_factory=dict)
    client_default_scopes: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, Rep] = field(default_factory=dict)
    users: dict[str, Rep] = field(default_factory=dict)
    user_groups: dict[str, set[str]] = field(default_factory=dict)
    user_roles: dict[str, set[str]] = field(default_factory=dict)
    user_profile: Rep = field(default_factory=_default_user_profile)


class KeycloakError(Exception):
    def __init__(self, status: int, body: Rep) -> None:
        self.status, self.body = status, body


def _not_found(what: str) -> KeycloakError:
    return KeycloakError(
        404, {"error": what, "error_description": "For more on this error consult the server log."}
    )


def _conflict(message: str) -> KeycloakError:
    return KeycloakError(409, {"errorMessage": message})


def _flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    return default if value is None else value.lower() == "true"


def _page(request: Request, items: list[Rep]) -> list[Rep]:
    first = int(request.query_params.get("first", 0))
    size = request.query_params.get("max")
    return items[first : first + int(size)] if size is not None else items[first:]


class FakeKeycloak(LocalServer):
    """In-memory Keycloak with a request log; serve it with :meth:`start`."""

    def __init__(self) -> None:
        super().__init__()
        self.realms: dict[str, RealmState] = {}
        self.tokens: set[str] = set()
        self.log: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        self.url = ""
        self.app = Starlette(routes=self._routes())

    # ------------------------------------------------------------------ server

    def start(self) -> str:
        self.url = super().start() + "/auth"
        return self.url

    def writes(self) -> list[tuple[str, str, Any]]:
        """Requests that changed state, in order."""
        return [entry for entry in self.log if entry[0] in {"POST", "PUT", "DELETE"}]

    # ------------------------------------------------------------------ routing

    def _routes(self) -> list[Route]:
        R = "/auth/admin/realms/{realm}"
        table: list[tuple[str, str, Callable[..., Any]]] = [
            ("/auth/realms/{realm}/protocol/openid-connect/token", "POST", self.token),
            ("/auth/admin/realms", "POST", self.create_realm),
            (R, "GET", self.get_realm),
            (R, "PUT", self.update_realm),
            (R + "/roles", "GET", self.list_roles),
            (R + "/roles", "POST", self.create_role),
            (R + "/roles/{name}", "GET", self.get_role),
            (R + "/roles/{name}", "PUT", self.update_role),
            (R + "/users/profile", "GET", self.get_profile),
            (R + "/users/profile", "PUT", self.put_profile),
            (R + "/client-scopes", "GET", self.list_scopes),
            (R + "/client-scopes", "POST", self.create_scope),
            (R + "/client-scopes/{id}", "GET", self.get_scope),
            (R + "/client-scopes/{id}", "PUT", self.update_scope),
            (R + "/client-scopes/{id}/protocol-mappers/models", "GET", self.list_mappers),
            (R + "/client-scopes/{id}/protocol-mappers/models", "POST", self.create_mapper),
            (R + "/client-scopes/{id}/protocol-mappers/models/{mid}", "PUT", self.update_mapper),
            (R + "/client-scopes/{id}/protocol-mappers/models/{mid}", "DELETE", self.del_mapper),
            (R + "/default-default-client-scopes", "GET", self.list_default_scopes),
            (R + "/default-default-client-scopes/{id}", "PUT", self.add_default_scope),
            (R + "/clients", "GET", self.list_clients),
            (R + "/clients", "POST", self.create_client),
            (R + "/clients/{id}", "GET", self.get_client),
            (R + "/clients/{id}", "PUT", self.update_client),
            (R + "/clients/{id}", "DELETE", self.delete_client),
            (R + "/clients/{id}/client-secret", "GET", self.client_secret),
            (R + "/clients/{id}/service-account-user", "GET", self.service_account),
            (R + "/clients/{id}/default-client-scopes", "GET", self.client_scopes),
            (R + "/clients/{id}/default-client-scopes/{sid}", "PUT", self.add_client_scope),
            (R + "/groups", "GET", self.list_groups),
            (R + "/groups", "POST", self.create_top_group),
            (R + "/groups/{id}", "GET", self.get_group),
            (R + "/groups/{id}", "PUT", self.update_group),
            (R + "/groups/{id}", "DELETE", self.delete_group),
            (R + "/groups/{id}/children", "GET", self.list_children),
            (R + "/groups/{id}/children", "POST", self.create_child_group),
            (R + "/group-by-path/{path:path}", "GET", self.group_by_path),
            (R + "/users", "GET", self.list_users),
            (R + "/users", "POST", self.create_user),
            (R + "/users/{id}", "GET", self.get_user),
            (R + "/users/{id}", "PUT", self.update_user),
            (R + "/users/{id}/groups", "GET", self.user_groups),
            (R + "/users/{id}/groups/{gid}", "PUT", self.join_group),
            (R + "/users/{id}/groups/{gid}", "DELETE", self.leave_group),
            (R + "/users/{id}/role-mappings/realm", "GET", self.user_roles),
            (R + "/users/{id}/role-mappings/realm", "POST", self.add_user_roles),
            (R + "/users/{id}/role-mappings/realm", "DELETE", self.remove_user_roles),
        ]
        return [Route(path, self._wrap(fn), methods=[method]) for path, method, fn in table]

    def _wrap(self, fn: Callable[..., Any]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body: Any = None
            if raw and request.headers.get("content-type", "").startswith("application/json"):
                body = json.loads(raw)
            self.log.append((request.method, request.url.path, body))
            is_token = request.url.path.endswith("/openid-connect/token")
            if not is_token:
                auth = request.headers.get("authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                    return JSONResponse({"error": "HTTP 401 Unauthorized"}, status_code=401)
            form = dict(await request.form()) if is_token else {}
            try:
                with self._lock:
                    if is_token:
                        return fn(request, form)
                    return fn(request, body, **request.path_params)
            except KeycloakError as exc:
                return JSONResponse(exc.body, status_code=exc.status)

        return endpoint

    def _realm(self, realm: str) -> RealmState:
        if realm not in self.realms:
            raise _not_found("Realm not found.")
        return self.realms[realm]

    @staticmethod
    def _created(request: Request, new_id: str) -> Response:
        location = f"{str(request.url).rstrip('/')}/{new_id}"
        return Response(status_code=201, headers={"Location": location})

    # ------------------------------------------------------------------ token

    def token(self, request: Request, form: dict[str, Any]) -> Response:
        realm = request.path_params["realm"]
        ok = (
            realm == "master"
            and form.get("grant_type") == "password"
            and form.get("client_id") == "admin-cli"
            and form.get("username") == ADMIN_USER
            and form.get("password") == ADMIN_PASSWORD
        )
        if not ok:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid user credentials"},
                status_code=401,
            )
        access = secrets.token_urlsafe(24)
        self.tokens.add(access)
        return JSONResponse(
            {
                "access_token": access,
                "expires_in": 60,
                "refresh_expires_in": 1800,
                "refresh_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "not-before-policy": 0,
                "session_state": str(uuid.uuid4()),
                "scope": "profile email",
            }
        )

    # ------------------------------------------------------------------ realm

    def create_realm(self, request: Request, body: Rep) -> Response:
        name = body["realm"]
        if name in self.realms:
            raise _conflict(f"Realm {name} already exists")
        state = RealmState(rep={"id": str(uuid.uuid4()), "enabled": True, **body})
        for role in ("offline_access", "uma_authorization", f"default-roles-{name}"):
            state.roles[role] = self._role_rep(state, {"name": role})
        for scope in BUILTIN_SCOPES:
            sid = str(uuid.uuid4())
            state.scopes[sid] = {
                "id": sid,
                "name": scope,
                "protocol": "openid-connect",
                "attributes": {},
                "protocolMappers": [],
            }
            if scope in DEFAULT_DEFAULT_SCOPES:
                state.default_default_scopes.append(sid)
        self.realms[name] = state
        return Response(status_code=201, headers={"Location": f"{request.url}/{name}"})

    def get_realm(self, request: Request, body: None, realm: str) -> Response:
        return JSONResponse(self._realm(realm).rep)

    def update_realm(self, request: Request, body: Rep, realm: str) -> Response:
        state = self._realm(realm)
        state.rep.update({k: v for k, v in body.items() if v is not None})
        return Response(status_code=204)

    # ------------------------------------------------------------------ roles

    @staticmethod
    def _role_rep(state: RealmState, body: Rep) -> Rep:
        return {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "description": body.get("description"),
            "composite": False,
            "clientRole": False,
            "containerId": state.rep["id"],
            "attributes": body.get("attributes") or {},
        }

    def list_roles(self, request: Request, body: None, realm: str) -> Response:
        roles = sorted(self._realm(realm).roles.values(), key=lambda r: r["name"])
        if _flag(request, "briefRepresentation", True):
            roles = [{k: v for k, v in r.items() if k != "attributes"} for r in roles]
        return JSONResponse(_page(request, roles))

    def create_role(self, request: Request, body: Rep, realm: str) -> Response:
        state = self._realm(realm)
        if body["name"] in state.roles:
            raise _conflict(f"Role with name {body['name']} already exists")
        state.roles[body["name"]] = self._role_rep(state, body)
        return self._created(request, body["name"])

    def get_role(self, request: Request, body: None, realm: str, name: str) -> Response:
        state = self._realm(realm)
        if name not in state.roles:
            raise _not_found("Could not find role")
        return JSONResponse(state.roles[name])

    def update_role(self, request: Request, body: Rep, realm: str, name: str) -> Response:
        role = self._realm(realm).roles.get(name)
        if role is None:
            raise _not_found("Could not find role")
        role.update({k: v for k, v in body.items() if k in {"description", "attributes"}})
        return Response(status_code=204)

    # ------------------------------------------------------------------ user profile

    def get_profile(self, request: Request, body: None, realm: str) -> Response:
        return JSONResponse(self._realm(realm).user_profile)

    def put_profile(self, request: Request, body: Rep, realm: str) -> Response:
        state = self._realm(realm)
        names = {a.get("name") for a in body.get("attributes") or []}
        if not {"username", "email"} <= names:
            raise KeycloakError(
                400,
                {
                    "errorMessage": "The attributes username and email "
                    "are required and cannot be removed"
                },
            )
        state.user_profile = copy.deepcopy(body)
        return JSONResponse(state.user_profile)

    def _profile_filter(self, state: RealmState, attributes: Rep) -> Rep:
        """Declared attributes only, validated; the rest vanish without an error."""
        declared = {a["name"]: a for a in state.user_profile.get("attributes") or []}
        kept: Rep = {}
        for name, values in (attributes or {}).items():
            if name not in declared:
                continue
            pattern = (declared[name].get("validations") or {}).get("pattern")
            for value in values:
                if pattern and not re.search(pattern["pattern"], value):
                    raise KeycloakError(
                        400,
                        {
                            "field": name,
                            "errorMessage": pattern.get("error-message", "error-pattern-no-match"),
                            "params": [name, value],
                        },
                    )
            kept[name] = list(values)
        return kept

    # ------------------------------------------------------------------ client scopes

    def _scope(self, state: RealmState, sid: str) -> Rep:
        if sid not in state.scopes:
            raise _not_found("Could not find client scope")
        return state.scopes[sid]

    def list_scopes(self, request: Request, body: None, realm: str) -> Response:
        return JSONResponse(list(self._realm(realm).scopes.values()))

    def create_scope(self, request: Request, body: Rep, realm: str) -> Response:
        state = self._realm(realm)
        if any(s["name"] == body["name"] for s in state.scopes.values()):
            raise _conflict(f"Client Scope {body['name']} already exists")
        sid = str(uuid.uuid4())
        mappers = [{**m, "id": str(uuid.uuid4())} for m in body.get("protocolMappers") or []]
        state.scopes[sid] = {**body, "id": sid, "protocolMappers": mappers}
        return self._created(request, sid)

    def get_scope(self, request: Request, body: None, realm: str, id: str) -> Response:
        return JSONResponse(self._scope(self._realm(realm), id))

    def update_scope(self, request: Request, body: Rep, realm: str, id: str) -> Response:
        scope = self._scope(self._realm(realm), id)
        scope.update({k: v for k, v in body.items() if k not in {"id", "protocolMappers"}})
        return Response(status_code=204)

    def list_mappers(self, request: Request, body: None, realm: str, id: str) -> Response:
        return JSONResponse(self._scope(self._realm(realm), id)["protocolMappers"])

    def create_mapper(self, request: Request, body: Rep, realm: str, id: str) -> Response:
        scope = self._scope(self._realm(realm), id)
        if any(m["name"] == body["name"] for m in scope["protocolMappers"]):
            raise _conflict("Protocol mapper exists with same name")
        mid = str(uuid.uuid4())
        scope["protocolMappers"].append({**body, "id": mid})
        return self._created(request, mid)

    def update_mapper(self, request: Request, body: Rep, realm: str, id: str, mid: str) -> Response:
        scope = self._scope(self._realm(realm), id)
        for i, mapper in enumerate(scope["protocolMappers"]):
            if mapper["id"] == mid:
                scope["protocolMappers"][i] = {**body, "id": mid}
                return Response(status_code=204)
        raise _not_found("Model not found")

    def del_mapper(self, request: Request, body: None, realm: str, id: str, mid: str) -> Response:
        scope = self._scope(self._realm(realm), id)
        before = len(scope["protocolMappers"])
        scope["protocolMappers"] = [m for m in scope["protocolMappers"] if m["id"] != mid]
        if len(scope["protocolMappers"]) == before:
            raise _not_found("Model not found")
        return Response(status_code=204)

    def list_default_scopes(self, request: Request, body: None, realm: str) -> Response:
        state = self._realm(realm)
        return JSONResponse(
            [{"id": s, "name": state.scopes[s]["name"]} for s in state.default_default_scopes]
        )

    def add_default_scope(self, request: Request, body: Any, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._scope(state, id)
        if id not in state.default_default_scopes:
            state.default_default_scopes.append(id)
        return Response(status_code=204)

    # ------------------------------------------------------------------ clients

    def _client(self, state: RealmState, cid: str) -> Rep:
        if cid not in state.clients:
            raise _not_found("Could not find client")
        return state.clients[cid]

    def list_clients(self, request: Request, body: None, realm: str) -> Response:
        clients = list(self._realm(realm).clients.values())
        wanted = request.query_params.get("clientId")
        if wanted is not None:
            clients = [c for c in clients if c["clientId"] == wanted]
        return JSONResponse(_page(request, clients))

    def create_client(self, request: Request, body: Rep, realm: str) -> Response:
        state = self._realm(realm)
        if any(c["clientId"] == body["clientId"] for c in state.clients.values()):
            raise _conflict(f"Client {body['clientId']} already exists")
        cid = str(uuid.uuid4())
        rep: Rep = {
            "protocol": "openid-connect",
            "publicClient": False,
            "attributes": {},
            "redirectUris": [],
            "webOrigins": [],
            **{k: v for k, v in body.items() if k not in {"defaultClientScopes"}},
            "id": cid,
        }
        if not rep["publicClient"] and not rep.get("secret"):
            rep["secret"] = secrets.token_urlsafe(24)
        by_name = {s["name"]: s["id"] for s in state.scopes.values()}
        if "defaultClientScopes" in body:
            # Keycloak ignores (with a warning) scope names that do not exist.
            scope_ids = [by_name[n] for n in body["defaultClientScopes"] if n in by_name]
        else:
            scope_ids = list(state.default_default_scopes)
        rep["defaultClientScopes"] = [state.scopes[s]["name"] for s in scope_ids]
        state.clients[cid] = rep
        state.client_default_scopes[cid] = scope_ids
        if rep.get("serviceAccountsEnabled"):
            self._new_service_account(state, rep)
        return self._created(request, cid)

    def _new_service_account(self, state: RealmState, client: Rep) -> None:
        uid = str(uuid.uuid4())
        state.users[uid] = {
            "id": uid,
            "username": f"service-account-{client['clientId']}".lower(),
            "enabled": True,
            "emailVerified": False,
            "createdTimestamp": int(time.time() * 1000),
            "serviceAccountClientId": client["id"],
            "attributes": {},
        }
        state.user_groups[uid] = set()
        state.user_roles[uid] = {f"default-roles-{state.rep['realm']}"}

    def get_client(self, request: Request, body: None, realm: str, id: str) -> Response:
        return JSONResponse(self._client(self._realm(realm), id))

    def update_client(self, request: Request, body: Rep, realm: str, id: str) -> Response:
        state = self._realm(realm)
        client = self._client(state, id)
        had_account = bool(client.get("serviceAccountsEnabled"))
        for key, value in body.items():
            if key in {"id", "defaultClientScopes", "optionalClientScopes"} or value is None:
                continue
            if key == "attributes":
                client["attributes"] = {**client.get("attributes", {}), **value}
            else:
                client[key] = value
        if client.get("serviceAccountsEnabled") and not had_account:
            self._new_service_account(state, client)
        return Response(status_code=204)

    def delete_client(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._client(state, id)
        del state.clients[id]
        for uid in [u for u, r in state.users.items() if r.get("serviceAccountClientId") == id]:
            del state.users[uid]
        return Response(status_code=204)

    def client_secret(self, request: Request, body: None, realm: str, id: str) -> Response:
        client = self._client(self._realm(realm), id)
        return JSONResponse({"type": "secret", "value": client.get("secret")})

    def service_account(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._client(state, id)
        for user in state.users.values():
            if user.get("serviceAccountClientId") == id:
                return JSONResponse(user)
        raise KeycloakError(400, {"error": "Client not enabled to retrieve service account"})

    def client_scopes(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._client(state, id)
        ids = state.client_default_scopes.get(id, [])
        return JSONResponse([{"id": s, "name": state.scopes[s]["name"]} for s in ids])

    def add_client_scope(
        self, request: Request, body: Any, realm: str, id: str, sid: str
    ) -> Response:
        state = self._realm(realm)
        self._client(state, id)
        self._scope(state, sid)
        ids = state.client_default_scopes.setdefault(id, [])
        if sid not in ids:
            ids.append(sid)
        return Response(status_code=204)

    # ------------------------------------------------------------------ groups

    def _group(self, state: RealmState, gid: str) -> Rep:
        if gid not in state.groups:
            raise _not_found("Could not find group by id")
        return state.groups[gid]

    def _group_view(self, state: RealmState, group: Rep, brief: bool) -> Rep:
        view = {
            "id": group["id"],
            "name": group["name"],
            "path": group["path"],
            "subGroupCount": sum(
                1 for g in state.groups.values() if g.get("parentId") == group["id"]
            ),
            "subGroups": [],
        }
        if group.get("parentId"):
            view["parentId"] = group["parentId"]
        if not brief:
            view["attributes"] = group.get("attributes") or {}
            view["realmRoles"] = []
            view["clientRoles"] = {}
        return view

    def list_groups(self, request: Request, body: None, realm: str) -> Response:
        state = self._realm(realm)
        brief = _flag(request, "briefRepresentation", True)
        top = [g for g in state.groups.values() if not g.get("parentId")]
        top.sort(key=lambda g: g["name"])
        return JSONResponse(_page(request, [self._group_view(state, g, brief) for g in top]))

    def _new_group(self, state: RealmState, body: Rep, parent: Rep | None) -> str:
        siblings = [
            g for g in state.groups.values() if g.get("parentId") == (parent or {}).get("id")
        ]
        if any(g["name"] == body["name"] for g in siblings):
            if parent is None:
                raise _conflict(f"Top level group named '{body['name']}' already exists.")
            raise _conflict(f"Sibling group named '{body['name']}' already exists.")
        gid = str(uuid.uuid4())
        state.groups[gid] = {
            "id": gid,
            "name": body["name"],
            "path": f"{parent['path'] if parent else ''}/{body['name']}",
            "parentId": parent["id"] if parent else None,
            "attributes": body.get("attributes") or {},
        }
        return gid

    def create_top_group(self, request: Request, body: Rep, realm: str) -> Response:
        return self._created(request, self._new_group(self._realm(realm), body, None))

    def create_child_group(self, request: Request, body: Rep, realm: str, id: str) -> Response:
        state = self._realm(realm)
        parent = self._group(state, id)
        gid = self._new_group(state, body, parent)
        # Keycloak answers a subgroup create with the new group's URL under /groups/{id}.
        base = str(request.url).split("/groups/")[0]
        return Response(status_code=201, headers={"Location": f"{base}/groups/{gid}"})

    def get_group(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        return JSONResponse(self._group_view(state, self._group(state, id), brief=False))

    def update_group(self, request: Request, body: Rep, realm: str, id: str) -> Response:
        group = self._group(self._realm(realm), id)
        if body.get("attributes") is not None:
            group["attributes"] = body["attributes"]
        return Response(status_code=204)

    def delete_group(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._group(state, id)
        doomed = {id}
        while True:
            more = {g["id"] for g in state.groups.values() if g.get("parentId") in doomed}
            if more <= doomed:
                break
            doomed |= more
        for gid in doomed:
            del state.groups[gid]
        for memberships in state.user_groups.values():
            memberships -= doomed
        return Response(status_code=204)

    def list_children(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._group(state, id)
        brief = _flag(request, "briefRepresentation", False)
        kids = sorted(
            (g for g in state.groups.values() if g.get("parentId") == id), key=lambda g: g["name"]
        )
        return JSONResponse(_page(request, [self._group_view(state, g, brief) for g in kids]))

    def group_by_path(self, request: Request, body: None, realm: str, path: str) -> Response:
        state = self._realm(realm)
        wanted = "/" + path.strip("/")
        for group in state.groups.values():
            if group["path"] == wanted:
                return JSONResponse(self._group_view(state, group, brief=False))
        raise _not_found("Group path does not exist")

    # ------------------------------------------------------------------ users

    def _user(self, state: RealmState, uid: str) -> Rep:
        if uid not in state.users:
            raise _not_found("User not found")
        return state.users[uid]

    def list_users(self, request: Request, body: None, realm: str) -> Response:
        state = self._realm(realm)
        users = [u for u in state.users.values() if not u.get("serviceAccountClientId")]
        username = request.query_params.get("username")
        if username is not None:
            exact = _flag(request, "exact", False)
            users = [
                u
                for u in users
                if (
                    u["username"] == username.lower()
                    if exact
                    else username.lower() in u["username"]
                )
            ]
        q = request.query_params.get("q")
        if q:
            for term in q.split():
                key, _, value = term.partition(":")
                users = [u for u in users if value in (u.get("attributes") or {}).get(key, [])]
        users.sort(key=lambda u: u["username"])
        return JSONResponse(_page(request, users))

    def create_user(self, request: Request, body: Rep, realm: str) -> Response:
        state = self._realm(realm)
        username = body["username"].lower()
        if any(u["username"] == username for u in state.users.values()):
            raise _conflict("User exists with same username")
        uid = str(uuid.uuid4())
        state.users[uid] = {
            "id": uid,
            "username": username,
            "enabled": body.get("enabled", False),
            "emailVerified": body.get("emailVerified", False),
            "createdTimestamp": int(time.time() * 1000),
            **{k: body[k] for k in ("email", "firstName", "lastName") if k in body},
            "attributes": self._profile_filter(state, body.get("attributes") or {}),
        }
        state.user_groups[uid] = set()
        state.user_roles[uid] = {f"default-roles-{realm}"}
        return self._created(request, uid)

    def get_user(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        return JSONResponse({**self._user(state, id), "access": {"manage": True}})

    def update_user(self, request: Request, body: Rep, realm: str, id: str) -> Response:
        state = self._realm(realm)
        user = self._user(state, id)
        for key in ("email", "firstName", "lastName", "enabled", "emailVerified"):
            if key in body:
                user[key] = body[key]
        if body.get("attributes") is not None:
            user["attributes"] = self._profile_filter(state, body["attributes"])
        return Response(status_code=204)

    def user_groups(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._user(state, id)
        groups = [state.groups[g] for g in sorted(state.user_groups.get(id, set()))]
        return JSONResponse(
            _page(request, [{"id": g["id"], "name": g["name"], "path": g["path"]} for g in groups])
        )

    def join_group(self, request: Request, body: Any, realm: str, id: str, gid: str) -> Response:
        state = self._realm(realm)
        self._user(state, id)
        self._group(state, gid)
        state.user_groups.setdefault(id, set()).add(gid)
        return Response(status_code=204)

    def leave_group(self, request: Request, body: Any, realm: str, id: str, gid: str) -> Response:
        state = self._realm(realm)
        self._user(state, id)
        self._group(state, gid)
        state.user_groups.setdefault(id, set()).discard(gid)
        return Response(status_code=204)

    def user_roles(self, request: Request, body: None, realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._user(state, id)
        names = sorted(state.user_roles.get(id, set()))
        return JSONResponse([state.roles[n] for n in names if n in state.roles])

    def _role_names(self, state: RealmState, body: list[Rep]) -> set[str]:
        names = {r["name"] for r in body}
        if not names <= set(state.roles):
            raise _not_found("Role not found")
        return names

    def add_user_roles(self, request: Request, body: list[Rep], realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._user(state, id)
        state.user_roles.setdefault(id, set()).update(self._role_names(state, body))
        return Response(status_code=204)

    def remove_user_roles(self, request: Request, body: list[Rep], realm: str, id: str) -> Response:
        state = self._realm(realm)
        self._user(state, id)
        state.user_roles.setdefault(id, set()).difference_update(self._role_names(state, body))
        return Response(status_code=204)
