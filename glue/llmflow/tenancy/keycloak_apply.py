"""Applying: perform planned changes through python-keycloak's admin client."""

from __future__ import annotations

from keycloak import KeycloakAdmin

from llmflow.tenancy.errors import KeycloakProvisioningError
from llmflow.tenancy.keycloak_changes import Action, Change, Principal
from llmflow.tenancy.keycloak_snapshot import Rep
from llmflow.tenancy.keycloak_template import MANAGED_SCOPE, TENANT_ATTRIBUTE
from llmflow.tenancy.secrets import SecretSource
from llmflow.tenancy.spec import SecretRef

# Read-only parts of a UserRepresentation that must not be sent back on update.
_USER_READ_ONLY = frozenset({"access", "userProfileMetadata", "createdTimestamp", "totp"})


class Applier:
    """Performs changes; resolves ids of objects created earlier in the same run."""

    def __init__(self, admin: KeycloakAdmin, realm: str, secrets: SecretSource) -> None:
        self.admin = admin
        self.realm = realm
        self.secrets = secrets

    def _secret(self, ref: SecretRef | None) -> str | None:
        return self.secrets.get(ref) if ref else None

    def _scope_id(self, name: str) -> str:
        scope = self.admin.get_client_scope_by_name(name)
        if scope is None:
            raise KeycloakProvisioningError(f"client scope {name!r} does not exist")
        return str(scope["id"])

    def _client_uuid(self, change: Change) -> str:
        if "client_uuid" in change.target:
            return change.target["client_uuid"]
        uuid = self.admin.get_client_id(change.name)
        if uuid is None:
            raise KeycloakProvisioningError(f"client {change.name!r} does not exist")
        return uuid

    def _group_id(self, path: str) -> str:
        # Keycloak accepts the path with or without its leading '/'; without it the URL
        # has no '//' for a proxy to collapse.
        return str(self.admin.get_group_by_path(path.lstrip("/"))["id"])

    def _principal(self, principal: Principal) -> Rep:
        if principal.service_account_of is not None:
            uuid = self.admin.get_client_id(principal.service_account_of)
            if uuid is None:
                raise KeycloakProvisioningError(
                    f"machine client {principal.service_account_of!r} does not exist"
                )
            return self.admin.get_client_service_account_user(uuid)
        found = self.admin.get_users({"username": principal.username, "exact": True})
        for rep in found:
            if rep["username"] == principal.username:
                return self.admin.get_user(rep["id"])
        raise KeycloakProvisioningError(f"user {principal.username!r} does not exist")

    def apply(self, change: Change) -> None:
        handler = getattr(self, f"_{change.kind.name.lower()}")
        handler(change)

    def _realm(self, change: Change) -> None:
        if change.action is Action.CREATE:
            self.admin.create_realm(dict(change.payload))
        else:
            self.admin.update_realm(self.realm, dict(change.payload))

    def _role(self, change: Change) -> None:
        if change.action is Action.CREATE:
            self.admin.create_realm_role(dict(change.payload))
        else:
            self.admin.update_realm_role(change.name, dict(change.payload))

    def _user_profile_attribute(self, change: Change) -> None:
        # The profile is one document: read it, replace only our attribute, write it back,
        # so attributes an administrator declared stay untouched.
        config = self.admin.get_realm_users_profile()
        attributes = [a for a in config.get("attributes", []) if a.get("name") != change.name]
        attributes.append(dict(change.payload))
        self.admin.update_realm_users_profile({**config, "attributes": attributes})

    def _client_scope(self, change: Change) -> None:
        if change.action is Action.CREATE:
            self.admin.create_client_scope(dict(change.payload))
        else:
            self.admin.update_client_scope(change.target["scope_id"], dict(change.payload))

    def _protocol_mapper(self, change: Change) -> None:
        scope_id = self._scope_id(MANAGED_SCOPE)
        if change.action is Action.CREATE:
            self.admin.add_mapper_to_client_scope(scope_id, dict(change.payload))
        elif change.action is Action.UPDATE:
            self.admin.update_mapper_in_client_scope(
                scope_id, change.target["mapper_id"], dict(change.payload)
            )
        else:
            self.admin.delete_mapper_from_client_scope(scope_id, change.target["mapper_id"])

    def _realm_default_scope(self, change: Change) -> None:
        self.admin.add_default_default_client_scope(self._scope_id(change.name))

    def _client(self, change: Change) -> None:
        if change.action is Action.CREATE:
            payload = dict(change.payload)
            secret = self._secret(change.secret_ref)
            if secret is not None:
                payload["secret"] = secret
            self.admin.create_client(payload)
        elif change.action is Action.UPDATE:
            payload = {k: v for k, v in change.payload.items() if k != "secret"}
            self.admin.update_client(self._client_uuid(change), payload)
        else:
            self.admin.delete_client(self._client_uuid(change))

    _machine_client = _client

    def _client_default_scope(self, change: Change) -> None:
        scope_id = self._scope_id(change.target["scope"])
        self.admin.add_client_default_client_scope(
            change.target["client_uuid"],
            scope_id,
            {
                "realm": self.realm,
                "client": change.target["client_uuid"],
                "clientScopeId": scope_id,
            },
        )

    def _client_secret(self, change: Change) -> None:
        secret = self._secret(change.secret_ref)
        if secret is None:
            raise KeycloakProvisioningError(f"{change.secret_ref} disappeared while applying")
        uuid = self._client_uuid(change)
        current = self.admin.get_client(uuid)
        self.admin.update_client(uuid, {**current, "secret": secret})

    def _group(self, change: Change) -> None:
        if change.action is Action.DELETE:
            self.admin.delete_group(change.target["group_id"])
        elif change.action is Action.UPDATE:
            self.admin.update_group(change.target["group_id"], dict(change.payload))
        else:
            parent_path = change.name.rsplit("/", 1)[0]
            parent = self._group_id(parent_path) if parent_path else None
            self.admin.create_group(dict(change.payload), parent=parent)

    def _user(self, change: Change) -> None:
        if change.action is Action.CREATE:
            self.admin.create_user(dict(change.payload))
            return
        assert change.principal is not None
        self._set_tenant(change.principal, change.payload.get(TENANT_ATTRIBUTE))

    def _service_account(self, change: Change) -> None:
        assert change.principal is not None
        self._set_tenant(change.principal, change.payload.get(TENANT_ATTRIBUTE))

    def _set_tenant(self, principal: Principal, tenant: str | None) -> None:
        rep = self._principal(principal)
        attributes = dict(rep.get("attributes") or {})
        if tenant is None:
            attributes.pop(TENANT_ATTRIBUTE, None)
        else:
            attributes[TENANT_ATTRIBUTE] = [tenant]
        # Keycloak replaces the user wholesale on PUT: send the full representation back.
        payload = {k: v for k, v in rep.items() if k not in _USER_READ_ONLY}
        payload["attributes"] = attributes
        self.admin.update_user(rep["id"], payload)

    def _group_membership(self, change: Change) -> None:
        assert change.principal is not None
        user_id = self._principal(change.principal)["id"]
        group_id = self._group_id(change.payload["path"])
        if change.action is Action.CREATE:
            self.admin.group_user_add(user_id, group_id)
        else:
            self.admin.group_user_remove(user_id, group_id)

    def _user_roles(self, change: Change) -> None:
        assert change.principal is not None
        user_id = self._principal(change.principal)["id"]
        if change.payload["add"]:
            roles = [self.admin.get_realm_role(name) for name in change.payload["add"]]
            self.admin.assign_realm_roles(user_id, roles)
        if change.payload["remove"]:
            roles = [self.admin.get_realm_role(name) for name in change.payload["remove"]]
            self.admin.delete_realm_roles_of_user(user_id, roles)
