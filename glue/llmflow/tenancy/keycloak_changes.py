"""Plan entries of Keycloak provisioning: one :class:`Change` per object and action."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llmflow.tenancy.spec import SecretRef


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"


class ObjectKind(StrEnum):
    """What a change touches. A plan lists changes in the order they must be applied."""

    REALM = "realm"
    ROLE = "realm-role"
    # Declared before any user or service account receives a 'tenant' value: Keycloak drops
    # undeclared attributes silently.
    USER_PROFILE_ATTRIBUTE = "user-profile-attribute"
    CLIENT_SCOPE = "client-scope"
    PROTOCOL_MAPPER = "protocol-mapper"
    REALM_DEFAULT_SCOPE = "realm-default-client-scope"
    CLIENT = "client"
    CLIENT_DEFAULT_SCOPE = "client-default-client-scope"
    CLIENT_SECRET = "client-secret"
    GROUP = "group"
    USER = "user"
    MACHINE_CLIENT = "machine-client"
    SERVICE_ACCOUNT = "service-account-user"
    GROUP_MEMBERSHIP = "group-membership"
    USER_ROLES = "user-realm-roles"


@dataclass(frozen=True)
class Principal:
    """A user by username, or the service-account user of a machine client."""

    username: str | None = None
    service_account_of: str | None = None

    def __str__(self) -> str:
        if self.service_account_of is not None:
            return f"service-account-{self.service_account_of}"
        return str(self.username)


@dataclass(frozen=True)
class Change:
    """One planned admin operation.

    ``payload`` is what will be sent (never a secret: secrets travel as ``secret_ref`` and are
    read only while applying). ``target`` carries ids already known at plan time, e.g. a
    client's internal id; objects created earlier in the same apply are looked up by name.
    """

    kind: ObjectKind
    name: str
    action: Action
    detail: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    target: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    secret_ref: SecretRef | None = None
    principal: Principal | None = None

    def describe(self) -> str:
        """One line for a person reading the plan."""
        text = f"{self.action.value:<7} {self.kind.value:<28} {self.name}"
        return f"{text}  ({self.detail})" if self.detail else text


def pending(plan: list[Change]) -> list[Change]:
    """The changes that would do something (no-ops dropped)."""
    return [change for change in plan if change.action is not Action.NOOP]
