"""Where client secrets come from: Kubernetes Secrets, never the repository or a plan.

In the cluster the provisioning job mounts the referenced Secrets as files
(``<secrets_dir>/<secret name>/<key>``, the layout of a Secret volume per Secret), so
:class:`MountedSecrets` is all it needs. The tenant control plane may instead read them with
the Kubernetes API and pass a :class:`StaticSecrets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from llmflow.tenancy.errors import SecretUnavailable
from llmflow.tenancy.spec import SecretRef


class SecretSource(Protocol):
    """Resolves a :class:`SecretRef`; ``None`` means "not provided, let Keycloak generate"."""

    def get(self, ref: SecretRef) -> str | None: ...


class NoSecrets:
    """Every confidential client keeps the secret Keycloak generated for it."""

    def get(self, ref: SecretRef) -> str | None:
        return None


class StaticSecrets:
    """Secrets already in memory, keyed by ``(secret name, key)``."""

    def __init__(self, values: Mapping[tuple[str, str], str]) -> None:
        self._values = dict(values)

    def get(self, ref: SecretRef) -> str | None:
        return self._values.get((ref.name, ref.key))


class MountedSecrets:
    """Secrets mounted as files: ``<root>/<name>/<key>``."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def get(self, ref: SecretRef) -> str | None:
        path = self._root / ref.name / ref.key
        if not path.exists():
            return None
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretUnavailable(f"cannot read {ref} from {path}: {exc}") from exc
        if not value:
            raise SecretUnavailable(f"{ref} is mounted at {path} but empty")
        return value
