"""A minimal Kubernetes API client for preflight checks and health gates.

The install host has only this package, so there is no `kubernetes` client library: the few
read-only calls `install` needs (`/version`, nodes, storage classes, workloads, endpoints,
the service proxy) are plain `GET`s over one `httpx.Client`. Credentials come from a bearer
token and a CA, either given directly or read from a kubeconfig — only the `server`,
`certificate-authority[-data]`, `insecure-skip-tls-verify`, `token` and `tokenFile` fields
are understood; client certificates and exec plugins are refused with a message rather than
half-supported.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from llmflow_airgap.errors import AirgapError


class KubernetesError(AirgapError):
    """The Kubernetes API cannot be reached, refused us, or answered something unusable."""


@dataclass(frozen=True)
class KubeAccess:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str
    ca_pem: str | None = None
    insecure: bool = False
    kubeconfig: Path | None = None
    context: str | None = None

    def ssl_verify(self) -> ssl.SSLContext | bool:
        """What httpx should verify the server certificate with."""
        if self.insecure:
            return False
        if self.ca_pem:
            return ssl.create_default_context(cadata=self.ca_pem)
        return True


def _named(entries: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            if isinstance(body, dict):
                return body
    raise KubernetesError(f"{path}: no {what} named {name!r}")


def load_kubeconfig(path: Path, context: str | None = None) -> KubeAccess:
    """Read server, CA and bearer token of one context of a kubeconfig file."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KubernetesError(f"cannot read kubeconfig {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise KubernetesError(f"{path} is not a kubeconfig")
    name = context or raw.get("current-context")
    if not name:
        raise KubernetesError(f"{path} has no current-context: pass --kube-context")
    ctx = _named(raw.get("contexts"), str(name), "context", path)
    cluster = _named(raw.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user = _named(raw.get("users"), str(ctx.get("user")), "user", path)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubernetesError(f"{path}: cluster of context {name!r} has no server")
    ca_pem: str | None = None
    if cluster.get("certificate-authority-data"):
        ca_pem = base64.b64decode(str(cluster["certificate-authority-data"])).decode("ascii")
    elif cluster.get("certificate-authority"):
        ca_file = path.parent / str(cluster["certificate-authority"])
        ca_pem = ca_file.read_text(encoding="ascii")
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (path.parent / str(user["tokenFile"])).read_text(encoding="utf-8").strip()
    if not token:
        raise KubernetesError(
            f"{path}: user of context {name!r} has no bearer token (client certificates and "
            "exec plugins are not supported here); use a ServiceAccount token"
        )
    return KubeAccess(
        server=server.rstrip("/"),
        token=str(token),
        ca_pem=ca_pem,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        kubeconfig=path,
        context=str(name),
    )


class KubeClient:
    """Read-only calls against the Kubernetes API (one connection pool)."""

    def __init__(self, access: KubeAccess, timeout: float = 15.0) -> None:
        self.access = access
        self._client = httpx.Client(
            base_url=access.server,
            headers={"Authorization": f"Bearer {access.token}", "Accept": "application/json"},
            verify=access.ssl_verify(),
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def get(self, path: str, *, allow_missing: bool = False) -> dict[str, Any] | None:
        """`GET` a JSON object; `None` for a 404 when `allow_missing`."""
        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            raise KubernetesError(f"Kubernetes API {self.access.server}: {exc}") from exc
        if response.status_code == 404 and allow_missing:
            return None
        if response.status_code in (401, 403):
            raise KubernetesError(
                f"Kubernetes API refused GET {path} ({response.status_code}): the token lacks "
                "the permission or has expired"
            )
        if response.status_code != 200:
            raise KubernetesError(
                f"Kubernetes API GET {path}: HTTP {response.status_code} {response.text[:200]}"
            )
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise KubernetesError(f"Kubernetes API GET {path}: not JSON") from exc
        if not isinstance(body, dict):
            raise KubernetesError(f"Kubernetes API GET {path}: not a JSON object")
        return body

    def must_get(self, path: str) -> dict[str, Any]:
        """`GET` a JSON object that has to exist."""
        body = self.get(path)
        assert body is not None  # allow_missing=False never returns None
        return body

    def probe(self, path: str) -> int:
        """Status code of a `GET` (used through the service proxy for HTTP health URLs)."""
        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            raise KubernetesError(f"Kubernetes API {self.access.server}: {exc}") from exc
        return response.status_code

    def version(self) -> dict[str, Any]:
        """`/version` (`gitVersion`, `major`, `minor`)."""
        return self.must_get("/version")

    def nodes(self) -> list[dict[str, Any]]:
        """Every Node object."""
        return list(self.must_get("/api/v1/nodes").get("items") or [])

    def storage_classes(self) -> list[dict[str, Any]]:
        """Every StorageClass object."""
        return list(self.must_get("/apis/storage.k8s.io/v1/storageclasses").get("items") or [])
