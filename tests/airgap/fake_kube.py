"""A stand-in Kubernetes API server on 127.0.0.1 (HTTPS, bearer token) for install tests.

No cluster can run on this machine, so this replays the documented shapes of the few
read-only endpoints `install` calls — `GET /version` (version.Info), `GET /api/v1/nodes`
(NodeList), `GET /apis/storage.k8s.io/v1/storageclasses` (StorageClassList), workload objects
under `/apis/apps/v1` and `/apis/batch/v1`, Endpoints, and the service proxy — with a real
TLS certificate signed by a test CA, so kubeconfig CA and token handling are exercised too.
Responses are plain dictionaries a test can change between calls (a rollout becoming ready).

It also takes the one write `install` makes, server-side apply (`PATCH <object path>` with
`Content-Type: application/apply-patch+yaml` and a `fieldManager`), as the API server does:
415 for another content type, 400 without a field manager or when the body names another
object, 404 (a `metav1.Status`) for a resource it does not serve or an object in a namespace
that does not exist, else it stores the object and answers 201 (created) or 200 (updated)
with it. Stored objects are served to `GET` too; every apply is recorded in `applies`.
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tls_material import tls_material

TOKEN = "test-installer-token"

Route = dict[str, Any] | Callable[[], tuple[int, dict[str, Any]]]


def version_info(minor: int = 31) -> dict[str, Any]:
    """`GET /version` as a v1.<minor> API server answers it."""
    return {
        "major": "1",
        "minor": str(minor),
        "gitVersion": f"v1.{minor}.2",
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def node(name: str, ready: bool = True, gpus: int = 0) -> dict[str, Any]:
    """A Node as `GET /api/v1/nodes` lists it."""
    allocatable = {"cpu": "16", "memory": "131072Mi", "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def node_list(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": list(nodes)}


def storage_class(name: str, default: bool) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


def storage_class_list(*classes: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "StorageClassList",
        "apiVersion": "storage.k8s.io/v1",
        "metadata": {},
        "items": list(classes),
    }


def deployment(name: str, namespace: str, replicas: int, ready: int) -> dict[str, Any]:
    """A Deployment with `ready` of `replicas` updated and available."""
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def endpoints(name: str, namespace: str, port: int, addresses: int) -> dict[str, Any]:
    return {
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [
            {
                "addresses": [{"ip": f"10.0.0.{i + 1}"} for i in range(addresses)],
                "ports": [{"port": port, "protocol": "TCP"}],
            }
        ]
        if addresses
        else [],
    }


def healthy_cluster(nodes: int = 1, gpus: int = 0) -> dict[str, Route]:
    """Routes of a cluster that passes every preflight check."""
    return {
        "/version": version_info(),
        "/api/v1/nodes": node_list(*(node(f"node-{i}", gpus=gpus) for i in range(nodes))),
        "/apis/storage.k8s.io/v1/storageclasses": storage_class_list(
            storage_class("local-path", default=True)
        ),
    }


# Resources the fake serves for apply: (API prefix, plural) -> namespaced. What a stock
# cluster serves for the kinds the platform ships, independent of the installer's own table.
SERVED: dict[tuple[str, str], bool] = {
    ("/api/v1", "namespaces"): False,
    ("/api/v1", "configmaps"): True,
    ("/api/v1", "secrets"): True,
    ("/api/v1", "services"): True,
    ("/api/v1", "serviceaccounts"): True,
    ("/apis/apps/v1", "deployments"): True,
    ("/apis/networking.k8s.io/v1", "networkpolicies"): True,
    ("/apis/autoscaling/v2", "horizontalpodautoscalers"): True,
    ("/apis/policy/v1", "poddisruptionbudgets"): True,
    ("/apis/rbac.authorization.k8s.io/v1", "roles"): True,
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"): True,
}


@dataclass(frozen=True)
class Apply:
    """One server-side apply request as the fake received it."""

    path: str
    query: dict[str, list[str]]
    content_type: str
    body: dict[str, Any]
    status: int


def _parse_object_path(path: str) -> tuple[str, str, str | None, str] | None:
    """(API prefix, plural, namespace, name) of an object path, None when malformed."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 2:
        prefix, rest = "/" + "/".join(parts[:2]), parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        prefix, rest = "/" + "/".join(parts[:3]), parts[3:]
    else:
        return None
    if len(rest) == 2:
        return prefix, rest[0], None, rest[1]
    if len(rest) == 4 and rest[0] == "namespaces":
        return prefix, rest[2], rest[1], rest[3]
    return None


@dataclass
class FakeKubeAPI:
    """HTTPS server answering GETs from `routes` (path -> object or callable)."""

    root: Path
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    applies: list[Apply] = field(default_factory=list)
    served: dict[tuple[str, str], bool] = field(default_factory=lambda: dict(SERVED))
    ca_pem: str = ""
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubeAPI:
        cert, key, self.ca_pem = tls_material(self.root, "kube-apiserver")
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                api.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._reply(401, _status(401, "Unauthorized"))
                    return
                path = self.path.split("?", 1)[0]
                route = api.routes.get(path)
                if route is None and path in api.objects:
                    self._reply(200, api.objects[path])
                elif route is None:
                    self._reply(404, _status(404, "NotFound"))
                elif callable(route):
                    self._reply(*route())
                else:
                    self._reply(200, route)

            def do_PATCH(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                api.requests.append(f"PATCH {self.path}")
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._reply(401, _status(401, "Unauthorized"))
                    return
                status, reply = api.apply(self.path, self.headers.get("Content-Type", ""), raw)
                self._reply(status, reply)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def apply(self, url: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Server-side apply of one object (the API server's answers, see the module doc)."""
        path, _, query_text = url.partition("?")
        query = urllib.parse.parse_qs(query_text)
        try:
            body: Any = yaml.safe_load(raw.decode())
        except (UnicodeDecodeError, yaml.YAMLError):
            body = None

        def answer(status: int, reply: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            recorded = body if isinstance(body, dict) else {}
            self.applies.append(Apply(path, query, content_type, recorded, status))
            return status, reply

        if content_type != "application/apply-patch+yaml":
            return answer(415, _status(415, "UnsupportedMediaType"))
        if not query.get("fieldManager"):
            return answer(400, _status(400, "fieldManager is required for apply requests"))
        parsed = _parse_object_path(path)
        if parsed is None or parsed[:2] not in self.served:
            return answer(404, _status(404, "the server could not find the requested resource"))
        prefix, plural, namespace, name = parsed
        if self.served[(prefix, plural)] != (namespace is not None):
            return answer(404, _status(404, "the server could not find the requested resource"))
        if namespace is not None and f"/api/v1/namespaces/{namespace}" not in self.objects:
            return answer(404, _status(404, f'namespaces "{namespace}" not found'))
        metadata = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(metadata, dict) or metadata.get("name") != name:
            return answer(400, _status(400, "the name of the object does not match the URL"))
        if metadata.get("namespace") != namespace:
            return answer(400, _status(400, "the namespace of the object does not match the URL"))
        created = path not in self.objects
        previous = self.objects.get(path, {}).get("metadata", {})
        stored = json.loads(json.dumps(body))
        stored["metadata"]["uid"] = previous.get("uid") or str(uuid.uuid4())
        stored["metadata"]["resourceVersion"] = str(len(self.applies) + 1)
        self.objects[path] = stored
        return answer(201 if created else 200, stored)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def kubeconfig(self, path: Path, token: str = TOKEN) -> Path:
        """A kubeconfig with this server, its CA (inline) and a bearer token."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(
                            self.ca_pem.encode()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "installer", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "installer"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return path


def _status(code: int, reason: str) -> dict[str, Any]:
    """A `metav1.Status` error body, as the API server sends with 4xx answers."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": reason,
        "reason": reason,
        "code": code,
    }
