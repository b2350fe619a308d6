"""A minimal Kubernetes API client for preflight checks and health gates.

The install host has only this package, so there is no `kubernetes` client library: the few
calls `install` needs are plain HTTP over one `httpx.Client` — `GET`s for preflight and
gates (`/version`, nodes, storage classes, workloads, endpoints, the service proxy) and one
write, server-side apply of our own manifests (`apply`). Credentials come from a bearer
token and a CA, either given directly or read from a kubeconfig — only the `server`,
`certificate-authority[-data]`, `insecure-skip-tls-verify`, `token` and `tokenFile` fields
are understood; client certificates and exec plugins are refused with a message rather than
half-supported.
"""

from __future__ import annotations

import base64
import json
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
    """Calls against the Kubernetes API (one connection pool)."""

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

    def apply(self, path: str, document: dict[str, Any], *, field_manager: str) -> int:
        """Server-side apply of one object at its path; 201 when created, 200 when updated.

        `PATCH <path>?fieldManager=<manager>&force=true` with
        `Content-Type: application/apply-patch+yaml`; the body is JSON, which is YAML. `force`
        takes over fields another manager (an earlier `kubectl apply`) owned.
        """
        try:
            response = self._client.patch(
                path,
                params={"fieldManager": field_manager, "force": "true"},
                content=json.dumps(document).encode(),
                headers={"Content-Type": "application/apply-patch+yaml"},
            )
        except httpx.HTTPError as exc:
            raise KubernetesError(f"Kubernetes API {self.access.server}: {exc}") from exc
        if response.status_code in (200, 201):
            return response.status_code
        message = _status_message(response)
        if response.status_code in (401, 403):
            raise KubernetesError(
                f"Kubernetes API refused PATCH {path} ({response.status_code}): the token lacks "
                f"the permission or has expired: {message}"
            )
        if response.status_code == 404:
            raise KubernetesError(
                f"Kubernetes API PATCH {path}: HTTP 404 (the API server does not serve this "
                f"kind and version, or the namespace does not exist): {message}"
            )
        raise KubernetesError(f"Kubernetes API PATCH {path}: HTTP {response.status_code} {message}")

    def version(self) -> dict[str, Any]:
        """`/version` (`gitVersion`, `major`, `minor`)."""
        return self.must_get("/version")

    def nodes(self) -> list[dict[str, Any]]:
        """Every Node object."""
        return list(self.must_get("/api/v1/nodes").get("items") or [])

    def storage_classes(self) -> list[dict[str, Any]]:
        """Every StorageClass object."""
        return list(self.must_get("/apis/storage.k8s.io/v1/storageclasses").get("items") or [])


def _status_message(response: httpx.Response) -> str:
    """The `message` of a `metav1.Status` error body, else the start of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200]
