"""A local stand-in for a Keycloak realm's token endpoint and JWKS (Keycloak cannot run here).

It replays Keycloak's documented contract byte for byte where it matters:

* access tokens are JWS compact serializations with the header ``{"alg":"RS256","typ":"JWT",
  "kid":…}`` in that order and the claims of a Keycloak 26 access token in Keycloak's order
  (``exp, iat, auth_time, jti, iss, aud, sub, typ, azp, sid, acr, allowed-origins,
  realm_access, resource_access, scope, email_verified, name, preferred_username, …``) plus
  the realm's ``tenant`` and ``groups`` (full path) mappers. ``aud`` is a list when the token
  has several audiences and a plain string when it has one, as Keycloak serializes it;
  there is no ``nbf``.
* client-credentials tokens of a service account: no ``auth_time``/``sid``, ``client_id``/
  ``clientHost``/``clientAddress`` from the service-account client scope, and
  ``preferred_username`` ``service-account-<client id>`` only with the ``profile`` scope.
* the ``llmflow`` client scope of platform/keycloak: ``tenant``, ``groups`` (full path), the
  realm roles again as a top-level ``roles`` claim, ``llmflow-api`` in ``aud``.
* the JWKS at ``/realms/<realm>/protocol/openid-connect/certs``: every key with ``kid`` (the
  base64url SHA-256 of the public key, as Keycloak's ``KeyUtils.createKeyId``), ``kty``,
  ``alg``, ``use``, ``n``, ``e``, ``x5c`` (a self-signed certificate ``CN=<realm>``), ``x5t``
  and ``x5t#S256``, with the realm's ``RSA-OAEP`` encryption key (``use: enc``) next to the
  ``RS256`` signing key.

Forging helpers (``alg: none``, HMAC with the public key, tampering) build tokens the way an
attacker would, without PyJWT's guard rails.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    return f"{b64url_json(header)}.{b64url_json(claims)}.{b64url(signature)}"


def signing_input(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return f"{b64url_json(header)}.{b64url_json(claims)}".encode()


def sign_rs(
    key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any], bits: int = 256
) -> str:
    algorithm = {256: hashes.SHA256(), 384: hashes.SHA384(), 512: hashes.SHA512()}[bits]
    sig = key.sign(signing_input(header, claims), padding.PKCS1v15(), algorithm)
    return compact(header, claims, sig)


def sign_hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    sig = hmac.new(secret, signing_input(header, claims), hashlib.sha256).digest()
    return compact(header, claims, sig)


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url_json(header)}.{b64url_json(claims)}."


def split(token: str) -> tuple[str, str, str]:
    head, payload, sig = token.split(".")
    return head, payload, sig


def decode_segment(segment: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return data


@dataclass
class RealmKey:
    """One RSA key of the realm as Keycloak's key provider holds it."""

    realm: str
    alg: str = "RS256"
    use: str = "sig"
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _jwk: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def public_der(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def kid(self) -> str:
        # Keycloak's KeyUtils.createKeyId: base64url(SHA-256(encoded public key))
        return b64url(hashlib.sha256(self.public_der).digest())

    def certificate(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.realm)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(int(time.time() * 1000))
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self.private, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def jwk(self) -> dict[str, Any]:
        if self._jwk is None:
            self._jwk = self._build_jwk()
        return self._jwk

    def _build_jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        der = self.certificate()
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": self.alg,
            "use": self.use,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
            "x5c": [base64.b64encode(der).decode()],
            "x5t": b64url(hashlib.sha1(der).digest()),
            "x5t#S256": b64url(hashlib.sha256(der).digest()),
        }


class KeycloakRealm:
    """A realm's keys and token minting, with Keycloak's claim layout."""

    def __init__(self, name: str = "llmflow", base_url: str = "https://sso.llmflow.test") -> None:
        self.name = name
        self.issuer = f"{base_url}/realms/{name}"
        self.signing = RealmKey(name)
        self.encryption = RealmKey(name, alg="RSA-OAEP", use="enc")
        self.passive: list[RealmKey] = []
        self.extra: list[RealmKey] = []

    def jwks(self) -> dict[str, Any]:
        keys = [self.encryption, self.signing, *self.passive, *self.extra]
        return {"keys": [k.jwk() for k in keys]}

    def rotate(self) -> RealmKey:
        """A new active signing key; the old one stays published as passive (Keycloak keeps a
        rotated key for verification until an admin disables it)."""
        old = self.signing
        self.passive.append(old)
        self.signing = RealmKey(self.name)
        return old

    def retire_passive(self) -> None:
        self.passive.clear()

    def header(self, key: RealmKey | None = None) -> dict[str, Any]:
        return {"alg": "RS256", "typ": "JWT", "kid": (key or self.signing).kid}

    def claims(
        self,
        *,
        tenant: str | None = "dept-hr",
        roles: tuple[str, ...] = ("developer",),
        username: str = "minji.kim",
        audience: str | list[str] | None = None,
        azp: str = "llmflow-web",
        lifetime_s: int = 300,
        issued_at: int | None = None,
        groups: list[str] | None = None,
    ) -> dict[str, Any]:
        """Claims of an authorization-code access token, in Keycloak's order."""
        iat = int(time.time()) if issued_at is None else issued_at
        aud: str | list[str] = audience or ["llmflow-api", "account"]
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]  # Keycloak writes a single audience as a string
        claims: dict[str, Any] = {
            "exp": iat + lifetime_s,
            "iat": iat,
            "auth_time": iat - 2,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": aud,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/{username}")),
            "typ": "Bearer",
            "azp": azp,
            "sid": str(uuid.uuid4()),
            "acr": "1",
            "allowed-origins": ["https://llmflow.test"],
            "realm_access": {
                "roles": [
                    "offline_access",
                    f"default-roles-{self.name}",
                    "uma_authorization",
                    *roles,
                ]
            },
            "resource_access": {
                "account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}
            },
            "scope": "openid email profile",
            "email_verified": True,
            "name": "Minji Kim",
            "preferred_username": username,
            "given_name": "Minji",
            "family_name": "Kim",
            "email": f"{username}@llmflow.test",
        }
        claims["roles"] = claims["realm_access"]["roles"]  # the llmflow scope's role mapper
        if tenant is not None:
            claims["tenant"] = tenant
            claims["groups"] = groups if groups is not None else [f"/tenants/{tenant}"]
        elif groups is not None:
            claims["groups"] = groups
        return claims

    def service_account_claims(
        self, client_id: str, tenant: str, *, profile_scope: bool = False, keycloak: int = 26
    ) -> dict[str, Any]:
        """Claims of a client-credentials token of a machine client (platform/keycloak's
        machine-client template: scopes acr, basic, roles, llmflow; service accounts on).

        No ``auth_time``/``sid`` (no user session). The service-account scope adds
        ``client_id`` (``clientId`` before Keycloak 26), ``clientHost``, ``clientAddress``;
        ``preferred_username`` appears only with the ``profile`` scope.
        """
        iat = int(time.time())
        roles = [f"default-roles-{self.name}", "viewer"]
        claims: dict[str, Any] = {
            "exp": iat + 300,
            "iat": iat,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": "llmflow-api",
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/sa/{client_id}")),
            "typ": "Bearer",
            "azp": client_id,
            "acr": "1",
            "realm_access": {"roles": roles},
            "scope": "llmflow profile" if profile_scope else "llmflow",
            "clientHost": "10.42.0.17",
        }
        if profile_scope:
            claims["email_verified"] = False
            claims["preferred_username"] = f"service-account-{client_id}".lower()
        claims["clientAddress"] = "10.42.0.17"
        claims["client_id" if keycloak >= 26 else "clientId"] = client_id
        claims["tenant"] = tenant
        claims["roles"] = roles
        return claims

    def token(self, claims: dict[str, Any] | None = None, key: RealmKey | None = None) -> str:
        """A token signed by this realm's active key (or ``key``), Keycloak's header."""
        key = key or self.signing
        return sign_rs(key.private, self.header(key), claims or self.claims())


class _JwksHandler(BaseHTTPRequestHandler):
    server: JwksHttpServer

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.hits += 1
            status, document, delay = srv.status, srv.document, srv.delay_s
        if delay:
            time.sleep(delay)
        if self.path != srv.path:
            status, document = 404, {"error": "Unable to find matching target resource method"}
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: pytest output is for assertions


class JwksHttpServer(ThreadingHTTPServer):
    """Serves a realm's JWKS on 127.0.0.1 from a thread; counts the requests it answers."""

    daemon_threads = True

    def __init__(self, realm: KeycloakRealm) -> None:
        super().__init__(("127.0.0.1", 0), _JwksHandler)
        self.realm = realm
        self.path = f"/realms/{realm.name}/protocol/openid-connect/certs"
        self.lock = threading.Lock()
        self.hits = 0
        self.status = 200
        self.delay_s = 0.0
        self.document: dict[str, Any] = realm.jwks()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def publish(self) -> None:
        """Serve the realm's current keys (after a rotation)."""
        with self.lock:
            self.document = self.realm.jwks()

    def start(self) -> JwksHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve_jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    """Generator for a pytest fixture: a started JWKS server, stopped afterwards."""
    server = JwksHttpServer(realm).start()
    try:
        yield server
    finally:
        server.stop()


def dead_url() -> str:
    """A 127.0.0.1 URL nothing listens on (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/realms/llmflow/protocol/openid-connect/certs"
