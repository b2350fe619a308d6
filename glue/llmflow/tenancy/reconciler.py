"""The one interface every system of the tenant control plane implements.

A reconciler reads what its system holds (:meth:`Reconciler.observe`), compares it with the
declared tenants (:meth:`Reconciler.plan`, pure: no I/O) and performs the planned changes
(:meth:`Reconciler.apply`). Applying a plan and planning again yields only ``unchanged``
entries; anything else on a second plan is drift and shows up as an update.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from llmflow.tenancy.spec import TenantSpec


class Operation(StrEnum):
    """What a plan entry does to one object."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PlannedChange:
    """One object of one system and what applying the plan does to it.

    ``tenant`` is the tenant the object belongs to (``None`` for platform-wide objects), so
    that ``tenant delete`` can keep exactly one tenant's entries. ``payload`` is what will be
    sent; it never holds a secret.
    """

    system: str
    kind: str
    name: str
    operation: Operation
    tenant: str | None = None
    detail: str = ""
    payload: Any = field(default=None, repr=False, compare=False)

    @property
    def pending(self) -> bool:
        """Whether applying this entry does something."""
        return self.operation is not Operation.UNCHANGED

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``--json`` output (no payload)."""
        return {
            "system": self.system,
            "operation": self.operation.value,
            "kind": self.kind,
            "name": self.name,
            "tenant": self.tenant,
            "detail": self.detail,
        }


ActualT = TypeVar("ActualT")


class Reconciler(ABC, Generic[ActualT]):
    """Plans and applies the tenants of one system (Keycloak, Kubernetes, OPA ...)."""

    system: ClassVar[str]

    @property
    def target(self) -> str:
        """Where this reconciler writes, for the plan header (a URL or a directory)."""
        return ""

    @abstractmethod
    async def observe(self, desired: Sequence[TenantSpec]) -> ActualT:
        """Read what the system holds for the declared tenants and for removed ones."""

    @abstractmethod
    def plan(self, desired: Sequence[TenantSpec], actual: ActualT) -> list[PlannedChange]:
        """Every object with its operation, in the order :meth:`apply` must run them."""

    @abstractmethod
    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        """Perform the pending entries of ``changes``; returns those performed."""

    async def aclose(self) -> None:  # an optional hook: most reconcilers hold nothing
        """Release connections."""


# ---------------------------------------------------------------------- comparison helpers

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number (``"1000m"`` and ``"1"`` are equal), else ``None``."""
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def _scalar_equal(desired: Any, current: Any) -> bool:
    if desired == current:
        return True
    if isinstance(desired, bool) or isinstance(current, bool):
        return False
    if isinstance(desired, str | int) and isinstance(current, str | int):
        # Servers normalise quantities ("0.5" -> "500m", 2 -> "2"): compare the numbers.
        left, right = quantity(desired), quantity(current)
        return left is not None and left == right
    return False


def drift(desired: Any, current: Any, prefix: str = "") -> list[str]:
    """Paths where ``desired`` is not part of ``current``.

    Only what ``desired`` names is compared (servers add defaults, status and bookkeeping);
    lists compare item by item and must have the same length.
    """
    if isinstance(desired, Mapping):
        if not isinstance(current, Mapping):
            return [prefix or "."]
        paths: list[str] = []
        for key, value in desired.items():
            paths += drift(value, current.get(key), f"{prefix}.{key}" if prefix else str(key))
        return paths
    if isinstance(desired, list):
        if not isinstance(current, list) or len(desired) != len(current):
            return [prefix or "."]
        out: list[str] = []
        for index, (d, c) in enumerate(zip(desired, current, strict=True)):
            out += drift(d, c, f"{prefix}[{index}]")
        return out
    return [] if _scalar_equal(desired, current) else [prefix or "."]


def summary(paths: Sequence[str]) -> str:
    """A short list of changed paths for the plan's detail column."""
    shown = ", ".join(paths[:3])
    return f"{shown} (+{len(paths) - 3} more)" if len(paths) > 3 else shown
