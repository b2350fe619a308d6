"""A small Kubernetes API client for the tenant objects: GET, list, server-side apply, DELETE.

Server-side apply is ``PATCH <object path>?fieldManager=llmflow&force=true`` with
``Content-Type: application/apply-patch+yaml`` and the full manifest as body (JSON is YAML):
the API server creates the object when it is missing and otherwise merges the fields this
manager owns, so applying the same manifest twice changes nothing. ``force=true`` takes over
fields another manager set by hand (drift repair is the point of ``tenant apply``).
Errors come back as a ``Status`` object (``{"kind": "Status", "code": 404, ...}``).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx

from llmflow.settings import TenancySettings
from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.k8s_manifests import FIELD_MANAGER, Manifest, ObjectRef, ref_of

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_URL = "https://kubernetes.default.svc"

# kind -> (API group/version prefix, resource plural, namespaced)
_RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ResourceQuota": ("/api/v1", "resourcequotas", True),
    "LimitRange": ("/api/v1", "limitranges", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
}
NAMESPACED_KINDS = tuple(kind for kind, (_, _, namespaced) in _RESOURCES.items() if namespaced)


def object_path(kind: str, namespace: str = "", name: str | None = None) -> str:
    """The REST path of an object (``name`` given) or of its collection."""
    try:
        prefix, plural, namespaced = _RESOURCES[kind]
    except KeyError as exc:
        raise TenantReconcileError(f"kubernetes: kind {kind!r} is not managed") from exc
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{path}/{name}" if name is not None else path


class KubernetesApi:
    """Bearer-token client of one API server."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            verify=verify,
            timeout=timeout_s,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: TenancySettings) -> KubernetesApi | None:
        """A client when a cluster is configured (URL or in-cluster), else ``None``."""
        url = settings.kubernetes_api_url or (
            IN_CLUSTER_URL if settings.kubernetes_in_cluster else None
        )
        if url is None:
            return None
        token_file = settings.kubernetes_token_file
        ca_file = settings.kubernetes_ca_file
        if settings.kubernetes_in_cluster:
            token_file = token_file or SERVICE_ACCOUNT_DIR / "token"
            ca_file = ca_file or SERVICE_ACCOUNT_DIR / "ca.crt"
        token = settings.kubernetes_token.get_secret_value() if settings.kubernetes_token else None
        if token is None and token_file is not None:
            try:
                token = token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TenantReconcileError(
                    f"kubernetes: cannot read the token file {token_file}: {exc}"
                ) from exc
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        return cls(url, token=token, verify=verify, timeout_s=settings.timeout_s)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise TenantReconcileError(
                f"kubernetes: {what}: {self.base_url} unreachable ({exc})"
            ) from exc

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> TenantReconcileError:
        try:
            body = response.json()
            message = body.get("message") or body
        except ValueError:
            message = response.text[:300]
        return TenantReconcileError(f"kubernetes: {what}: HTTP {response.status_code} {message}")

    async def get(self, ref: ObjectRef) -> Manifest | None:
        """The live object, or ``None`` when the API answers 404."""
        path = object_path(ref.kind, ref.namespace, ref.name)
        response = await self._request("GET", path, f"get {ref.kind} {ref}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"get {ref.kind} {ref}")
        body: Manifest = response.json()
        return body

    async def list(
        self, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[Manifest]:
        """Objects of ``kind`` (in ``namespace``) matching ``label_selector``."""
        path = object_path(kind, namespace)
        params = {"labelSelector": label_selector} if label_selector else {}
        response = await self._request("GET", path, f"list {kind}", params=params)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise self._fail(response, f"list {kind}")
        items = response.json().get("items") or []
        # List items omit kind/apiVersion; put them back so that items read like GETs.
        return [{"kind": kind, **item} for item in items]

    async def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply of ``manifest`` (create or update), as field manager ``llmflow``."""
        ref = ref_of(manifest)
        path = object_path(ref.kind, ref.namespace, ref.name)
        response = await self._request(
            "PATCH",
            path,
            f"apply {ref.kind} {ref}",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(manifest).encode(),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, f"apply {ref.kind} {ref}")
        body: Manifest = response.json()
        return body

    async def delete(self, ref: ObjectRef) -> None:
        """Delete an object; already gone is fine (deletion is what was wanted)."""
        path = object_path(ref.kind, ref.namespace, ref.name)
        response = await self._request(
            "DELETE",
            path,
            f"delete {ref.kind} {ref}",
            json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"},
        )
        if response.status_code not in (200, 202, 404):
            raise self._fail(response, f"delete {ref.kind} {ref}")
