"""Cluster objects a Dify release needs before Helm installs it.

Each class here is one install step (`ClusterStep` in `install.py`): a state key, a
fingerprint for `--resume`, one line for the plan, and an idempotent `run`.

* `DifyCredentials` — Dify's admin API key in the `dify-credentials` Secret of a Dify
  namespace (`ADMIN_API_KEY_ENABLE`, `ADMIN_API_KEY`; `helm-values/dify` reads both through
  `secretKeyRef`, and the glue reads the same Secret in `llmflow-system`). The key is made at
  install time (48 random bytes, URL-safe) **only when the Secret lacks one**: it is never
  rotated, printed, or written to the state file or the plan. The glue holds one admin key
  for every Dify it wires (`LLMFLOW_DIFY__ADMIN_API_KEY`), so the shared namespace's key is
  the source and each tenant namespace gets a copy when it has none; a tenant Secret that
  already holds another key is left alone and reported. Other keys of an existing Secret
  (database and store credentials the operator created) are untouched: server-side apply
  adds only the two fields, owned by our field manager.
* `PluginSigningKey` — the `dify-plugin-signing` Secret (`public.pem`) the plugin daemon
  mounts at `/app/keys` and trusts through `THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS`:
  the bundle's `dify-plugins/public.pem`, the key its re-signed plugins verify with.
* `TenantDatabase` — a CloudNativePG `Database` (postgresql.cnpg.io/v1, CNPG >= 1.25:
  `spec.name`, `spec.owner`, `spec.cluster.name`, in the Cluster's namespace), applied and
  then waited for until the operator reports `status.applied: true`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from llmflow_airgap.errors import AirgapError
from llmflow_airgap.kube import KubeClient, KubernetesError
from llmflow_airgap.manifests import FIELD_MANAGER, resource_path

CREDENTIALS_SECRET: Final = "dify-credentials"
SIGNING_SECRET: Final = "dify-plugin-signing"
SIGNING_KEY_FILE: Final = "public.pem"
ADMIN_KEY: Final = "ADMIN_API_KEY"
ADMIN_KEY_ENABLE: Final = "ADMIN_API_KEY_ENABLE"
ADMIN_KEY_BYTES: Final = 48
CNPG_API: Final = "postgresql.cnpg.io/v1"
DATABASE_TIMEOUT_S: Final = 300
_LABELS: Final = {
    "app.kubernetes.io/managed-by": FIELD_MANAGER,
    "app.kubernetes.io/part-of": "llmflow",
}


class DifyClusterError(AirgapError):
    """A Dify prerequisite could not be read or created in the cluster."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def secret_value(secret: dict[str, Any] | None, key: str) -> str | None:
    """One decoded key of a Secret object (None when the Secret or the key is absent)."""
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise DifyClusterError(f"Secret key {key} is not base64 UTF-8 text: {exc}") from exc


def _secret_path(namespace: str, name: str) -> str:
    return resource_path("v1", "Secret", name, namespace, f"Secret {namespace}/{name}")


def _require_namespace(kube: KubeClient, namespace: str, why: str) -> None:
    if kube.get(f"/api/v1/namespaces/{namespace}", allow_missing=True) is None:
        raise DifyClusterError(
            f"namespace {namespace} does not exist: {why} (`llmflow tenant apply` creates a "
            "tenant's namespace with its quotas and network policies; run it first)"
        )


def _apply(kube: KubeClient, path: str, body: dict[str, Any], what: str) -> int:
    try:
        return kube.apply(path, body, field_manager=FIELD_MANAGER)
    except KubernetesError as exc:
        raise DifyClusterError(f"{what}: {exc}") from exc


def read_admin_key(kube: KubeClient, namespace: str) -> str:
    """The admin key of the Dify in `namespace`, from its `dify-credentials` Secret."""
    secret = kube.get(_secret_path(namespace, CREDENTIALS_SECRET), allow_missing=True)
    key = secret_value(secret, ADMIN_KEY)
    if not key:
        raise DifyClusterError(
            f"Secret {namespace}/{CREDENTIALS_SECRET} holds no {ADMIN_KEY} (install creates it "
            "before the dify release; was that step skipped?)"
        )
    return key


@dataclass
class DifyCredentials:
    """Ensure `ADMIN_API_KEY_ENABLE`/`ADMIN_API_KEY` in one namespace's `dify-credentials`."""

    namespace: str
    source_namespace: str | None = None
    on_notice: Callable[[str], None] | None = None
    token: Callable[[int], str] = field(default=secrets.token_urlsafe, repr=False)

    @property
    def step_id(self) -> str:
        """State key."""
        return f"secret/{self.namespace}/{CREDENTIALS_SECRET}"

    def fingerprint(self) -> str | None:
        """None: the step only ensures presence, so a finished one never runs again on resume."""
        return None

    def describe(self) -> str:
        """One line for the plan (never the key)."""
        origin = (
            f"copied from {self.source_namespace}/{CREDENTIALS_SECRET}"
            if self.source_namespace
            else f"{ADMIN_KEY_BYTES} random bytes, URL-safe"
        )
        return (
            f"Secret {self.namespace}/{CREDENTIALS_SECRET}: {ADMIN_KEY_ENABLE}, {ADMIN_KEY} "
            f"only if absent ({origin}; never rotated, never shown)"
        )

    def _new_key(self, kube: KubeClient) -> tuple[str, str]:
        if self.source_namespace:
            source = kube.get(
                _secret_path(self.source_namespace, CREDENTIALS_SECRET), allow_missing=True
            )
            shared = secret_value(source, ADMIN_KEY)
            if shared:
                return shared, f"{self.source_namespace}/{CREDENTIALS_SECRET}"
        return self.token(ADMIN_KEY_BYTES), "generated"

    def run(self, kube: KubeClient, sleep: Callable[[float], None]) -> dict[str, Any]:
        """Create the two keys when missing; report what exists (no key material)."""
        path = _secret_path(self.namespace, CREDENTIALS_SECRET)
        _require_namespace(kube, self.namespace, f"Secret {CREDENTIALS_SECRET} goes there")
        existing = kube.get(path, allow_missing=True)
        current = secret_value(existing, ADMIN_KEY)
        if current:
            if self.source_namespace and self.on_notice is not None:
                shared = secret_value(
                    kube.get(
                        _secret_path(self.source_namespace, CREDENTIALS_SECRET),
                        allow_missing=True,
                    ),
                    ADMIN_KEY,
                )
                if shared and shared != current:
                    self.on_notice(
                        f"{self.namespace}/{CREDENTIALS_SECRET} holds another {ADMIN_KEY} than "
                        f"{self.source_namespace}/{CREDENTIALS_SECRET}: left as it is, but the "
                        "glue (one admin key) cannot wire this tenant's Dify until they match"
                    )
            return {"secret": f"{self.namespace}/{CREDENTIALS_SECRET}", "adminKey": "exists"}
        key, origin = self._new_key(kube)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": CREDENTIALS_SECRET, "namespace": self.namespace},
            "data": {ADMIN_KEY_ENABLE: _b64("true"), ADMIN_KEY: _b64(key)},
        }
        if existing is None:
            body["metadata"]["labels"] = dict(_LABELS)
            body["type"] = "Opaque"
        _apply(kube, path, body, f"Secret {self.namespace}/{CREDENTIALS_SECRET}")
        return {
            "secret": f"{self.namespace}/{CREDENTIALS_SECRET}",
            "adminKey": "created",
            "secretCreated": existing is None,
            "keyOrigin": origin,
        }


@dataclass
class PluginSigningKey:
    """The public key the plugin daemon trusts, as Secret `dify-plugin-signing`."""

    namespace: str
    public_pem: bytes

    @property
    def step_id(self) -> str:
        """State key."""
        return f"secret/{self.namespace}/{SIGNING_SECRET}"

    def fingerprint(self) -> str:
        """sha256 of the key: a bundle signed with another key re-applies it."""
        return "sha256:" + hashlib.sha256(self.public_pem).hexdigest()

    def describe(self) -> str:
        """One line for the plan."""
        return (
            f"Secret {self.namespace}/{SIGNING_SECRET}: {SIGNING_KEY_FILE} = the bundle's "
            f"dify-plugins/public.pem ({self.fingerprint()[:19]}), mounted by the plugin daemon"
        )

    def run(self, kube: KubeClient, sleep: Callable[[float], None]) -> dict[str, Any]:
        """Server-side apply the Secret."""
        _require_namespace(kube, self.namespace, f"Secret {SIGNING_SECRET} goes there")
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": SIGNING_SECRET, "namespace": self.namespace, "labels": _LABELS},
            "data": {SIGNING_KEY_FILE: base64.b64encode(self.public_pem).decode("ascii")},
        }
        path = _secret_path(self.namespace, SIGNING_SECRET)
        code = _apply(kube, path, body, f"Secret {self.namespace}/{SIGNING_SECRET}")
        return {"secret": f"{self.namespace}/{SIGNING_SECRET}", "created": code == 201}


@dataclass
class TenantDatabase:
    """A CloudNativePG `Database` for one of a tenant's Dify databases."""

    tenant: str
    database: str
    owner: str
    cluster: str
    namespace: str
    timeout_s: int = DATABASE_TIMEOUT_S
    interval_s: float = 5.0

    @property
    def object_name(self) -> str:
        """A DNS-1123 name for the object (database names carry underscores)."""
        return f"{self.cluster}-{self.database.replace('_', '-')}"[:253]

    @property
    def path(self) -> str:
        """REST path of the object."""
        return resource_path(
            CNPG_API, "Database", self.object_name, self.namespace, f"Database {self.database}"
        )

    @property
    def step_id(self) -> str:
        """State key."""
        return f"database/{self.namespace}/{self.object_name}"

    def body(self) -> dict[str, Any]:
        """The `Database` object."""
        return {
            "apiVersion": CNPG_API,
            "kind": "Database",
            "metadata": {
                "name": self.object_name,
                "namespace": self.namespace,
                "labels": {**_LABELS, "llmflow.io/tenant": self.tenant},
            },
            # `retain` (CNPG's default, stated): removing the object never drops tenant data.
            "spec": {
                "name": self.database,
                "owner": self.owner,
                "cluster": {"name": self.cluster},
                "ensure": "present",
                "databaseReclaimPolicy": "retain",
            },
        }

    def fingerprint(self) -> str:
        """sha256 of the object."""
        text = json.dumps(self.body(), sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> str:
        """One line for the plan."""
        return (
            f"Database {self.namespace}/{self.object_name} ({CNPG_API}): database "
            f"{self.database} owned by {self.owner} in cluster {self.cluster}"
        )

    def run(self, kube: KubeClient, sleep: Callable[[float], None]) -> dict[str, Any]:
        """Apply, then wait until CNPG has created the database (`status.applied`)."""
        code = _apply(kube, self.path, self.body(), f"Database {self.database}")
        deadline = time.monotonic() + self.timeout_s
        while True:
            current = kube.get(self.path, allow_missing=True) or {}
            status = current.get("status") or {}
            if status.get("applied") is True:
                return {"database": self.database, "created": code == 201}
            if time.monotonic() >= deadline:
                message = status.get("message") or "no status from the CNPG operator yet"
                raise DifyClusterError(
                    f"CNPG did not create database {self.database} in cluster {self.cluster} "
                    f"within {self.timeout_s}s: {message}"
                )
            sleep(self.interval_s)
