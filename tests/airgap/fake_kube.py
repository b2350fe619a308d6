"""A stand-in Kubernetes API server on 127.0.0.1 (HTTPS, bearer token) for install tests.

No cluster can run on this machine, so this replays the documented shapes of the few
read-only endpoints `install` calls — `GET /version` (version.Info), `GET /api/v1/nodes`
(NodeList), `GET /apis/storage.k8s.io/v1/storageclasses` (StorageClassList), workload objects
under `/apis/apps/v1` and `/apis/batch/v1`, Endpoints, and the service proxy — with a real
TLS certificate signed by a test CA, so kubeconfig CA and token handling are exercised too.
Responses are plain dictionaries a test can change between calls (a rollout becoming ready).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def _tls_material(root: Path) -> tuple[Path, Path, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    cert_file = root / "apiserver.pem"
    key_file = root / "apiserver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class FakeKubeAPI:
    """HTTPS server answering GETs from `routes` (path -> object or callable)."""

    root: Path
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    ca_pem: str = ""
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubeAPI:
        cert, key, self.ca_pem = _tls_material(self.root)
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
                route = api.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self._reply(404, _status(404, "NotFound"))
                elif callable(route):
                    self._reply(*route())
                else:
                    self._reply(200, route)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

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
