"""The interface every Helm driver implements, and what it takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmflow_airgap.errors import AirgapError


class HelmError(AirgapError):
    """Helm refused or failed a release (the message carries Helm's own words)."""


@dataclass(frozen=True)
class ReleaseSpec:
    """One `helm upgrade --install`: which chart, where, with which values."""

    name: str
    namespace: str
    chart: Path
    values: dict[str, Any] = field(default_factory=dict)
    timeout_s: int = 600
    # --wait and --atomic (rollback on failure): a half-installed release never stays behind.
    wait: bool = True
    atomic: bool = True


@dataclass(frozen=True)
class ReleaseInfo:
    """What Helm reports about an installed release."""

    name: str
    namespace: str
    revision: int
    status: str
    chart: str

    @classmethod
    def from_helm_json(cls, data: dict[str, Any], namespace: str) -> ReleaseInfo:
        """Read Helm's release JSON (`helm status -o json`, the SDK's release summary)."""
        info = data.get("info") or {}
        metadata = (data.get("chart") or {}).get("metadata") or {}
        chart = f"{metadata.get('name', '?')}-{metadata.get('version', '?')}"
        return cls(
            name=str(data.get("name", "")),
            namespace=str(data.get("namespace") or namespace),
            revision=int(data.get("version") or data.get("revision") or 0),
            status=str(info.get("status") or data.get("status") or "unknown"),
            chart=chart,
        )


class HelmDriver(Protocol):
    """Runs Helm for `install` and `status`."""

    name: str

    def upgrade_install(self, spec: ReleaseSpec) -> ReleaseInfo:
        """Install the release, or upgrade it if it exists; wait until it is ready."""

    def render(self, spec: ReleaseSpec) -> dict[str, str]:
        """The manifests the release would apply (template path -> YAML), offline."""

    def release(self, name: str, namespace: str) -> ReleaseInfo | None:
        """The deployed release, or None if there is none."""
