"""The registry token flow against `docker-registry` configured for token auth.

The registry is real and checks every token itself (signature, certificate chain, audience,
scopes). The token *service* is a small server written here that follows the Docker token
specification (`GET realm?service=...&scope=...` with HTTP Basic, answers `{"token": ...}` —
an ES256 JWT with an `x5c` header whose certificate the registry trusts); in production that
role is played by Harbor, Quay or Keycloak-backed auth, none of which can run here.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from oci_world import REGISTRY_BINARY, LocalRegistry, digest_of, tar_gz

from llmflow_airgap.errors import RegistryError
from llmflow_airgap.registry import OCI_MANIFEST, RegistryClient

SERVICE = "llmflow-test-registry"
ISSUER = "llmflow-test-issuer"
USER, PASSWORD = "ci", "s3cret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenService:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": USER,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def start(self) -> TokenService:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                service.requests.append(query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected or query.get("service") != [
                    SERVICE
                ]:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": service.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self


def _self_signed() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmflow test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalRegistry, TokenService]]:
    if not REGISTRY_BINARY.exists():
        pytest.skip(f"{REGISTRY_BINARY} is missing (apt install docker-registry): no OCI registry")
    root = tmp_path_factory.mktemp("token-registry")
    key, cert = _self_signed()
    (root / "root.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tokens = TokenService(key, cert).start()
    auth = {
        "token": {
            "realm": tokens.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(root / "root.pem"),
        }
    }
    try:
        registry = LocalRegistry(root, extra_config={"auth": auth}).start()
        try:
            yield registry, tokens
        finally:
            registry.stop()
    finally:
        assert tokens.server is not None
        tokens.server.shutdown()


def test_pull_and_push_through_the_token_flow(
    token_registry: tuple[LocalRegistry, TokenService],
) -> None:
    registry, tokens = token_registry
    layer, diff_id = tar_gz({"hello": b"token world"})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    mirrors = {"registry.example.com": registry.url}
    with RegistryClient(mirrors, credentials={"registry.example.com": (USER, PASSWORD)}) as client:
        for blob in (config, layer):
            outcome = client.upload_blob("registry.example.com", "team/app", digest_of(blob), blob)
            assert outcome.status == "uploaded"
        client.put_manifest("registry.example.com", "team/app", "1.0", manifest, OCI_MANIFEST)
        # a mount into another repository needs pull on the source too: the challenge says so
        outcome = client.upload_blob(
            "registry.example.com", "team/other", digest_of(layer), layer, mount_from="team/app"
        )
        got = client.get_manifest("registry.example.com", "team/app", "1.0")
    assert outcome.status == "mounted"
    assert got.digest == digest_of(manifest)
    # the registry lists actions in no fixed order (`push,pull` or `pull,push`)
    scopes = {
        (scope.rsplit(":", 1)[0], frozenset(scope.rsplit(":", 1)[1].split(",")))
        for request in tokens.requests
        for scope in request.get("scope", [])
    }
    assert ("repository:team/app", frozenset({"pull", "push"})) in scopes
    assert ("repository:team/other", frozenset({"pull", "push"})) in scopes
    # the mount's token request asked for both repositories at once, as the challenge said
    assert any(
        len(request.get("scope", [])) == 2
        and {s.split(":")[1] for s in request["scope"]} == {"team/app", "team/other"}
        for request in tokens.requests
    ), tokens.requests


def test_wrong_password_is_a_clear_error(
    token_registry: tuple[LocalRegistry, TokenService],
) -> None:
    registry, _ = token_registry
    mirrors = {"registry.example.com": registry.url}
    with (
        RegistryClient(mirrors, credentials={"registry.example.com": (USER, "wrong")}) as client,
        pytest.raises(RegistryError, match=r"token service .* answered 401"),
    ):
        client.get_manifest("registry.example.com", "team/app", "1.0")
