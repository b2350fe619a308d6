"""A small client for the OCI distribution API (pull and push), built on one `httpx.Client`.

Why our own rather than shelling out to `skopeo`: the install host has only this package, and
the bundle needs things a copy tool hides — a digest check while each chunk streams to disk,
HTTP Range resume of a half-downloaded layer, `HEAD` before every upload so nothing is pushed
twice, and cross-repository mounts so a layer shared by twenty images crosses the wire once.

Registry hosts are addressed by their *source* name (`docker.io`, `nvcr.io`); a mirror map
points a source host at another endpoint (`docker.io=http://127.0.0.1:5000`), which is how
tests and sites with a pull-through cache reach the content without rewriting references.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmflow_airgap.digests import CHUNK_SIZE, hash_file_into, is_digest, sha256_bytes
from llmflow_airgap.errors import DigestMismatchError, RegistryError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

# Registries cap manifests at 4 MiB; a larger answer is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_DOCKER_HUB_API = "https://registry-1.docker.io"
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')

ProgressCallback = Callable[[int], None]
SessionCallback = Callable[[str, int], None]
BodyFactory = Callable[[], bytes | Iterator[bytes]]


def parse_mirror(spec: str) -> tuple[str, str]:
    """Parse `source-host=endpoint` (endpoint `host:port` or a full `http(s)://` URL)."""
    host, sep, endpoint = spec.partition("=")
    if not sep or not host or not endpoint:
        raise RegistryError(f"registry mirror {spec!r} must look like docker.io=127.0.0.1:5000")
    return host.strip(), endpoint_url(endpoint.strip())


def endpoint_url(endpoint: str) -> str:
    """A base URL for a registry endpoint; loopback hosts default to plain HTTP."""
    if endpoint.startswith(("http://", "https://")):
        return endpoint.rstrip("/")
    hostname = endpoint.split(":")[0]
    loopback = hostname in {"localhost", "::1"} or hostname.startswith("127.")
    return f"{'http' if loopback else 'https'}://{endpoint.rstrip('/')}"


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry served it (bytes keep the digest valid)."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        """The parsed document."""
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed

    @property
    def is_index(self) -> bool:
        """An OCI index or a Docker manifest list (one entry per platform)."""
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class UploadOutcome:
    """What `upload_blob` did: `exists`, `mounted` or `uploaded` (bytes sent, resumed at)."""

    status: str
    sent: int = 0
    resumed_from: int = 0


@dataclass(frozen=True)
class DownloadResult:
    """What one blob download did: bytes fetched now, and where it resumed from."""

    fetched: int
    resumed_from: int


class RegistryClient:
    """OCI distribution API client: token auth, retries, mirrors, streaming blobs."""

    def __init__(
        self,
        mirrors: Mapping[str, str] | None = None,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        self._mirrors = dict(mirrors or {})
        self._credentials = dict(credentials or {})
        self._retries = retries
        self._tokens: dict[tuple[str, str], str] = {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def base_url(self, host: str) -> str:
        """The endpoint that serves `host` (after the mirror map)."""
        if host in self._mirrors:
            return self._mirrors[host]
        if host == "docker.io":
            return _DOCKER_HUB_API
        return endpoint_url(host)

    # ------------------------------------------------------------------ transport

    def _send(
        self,
        method: str,
        host: str,
        repo: str,
        url: str,
        *,
        actions: str = "pull",
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        base = self.base_url(host)
        target = url if url.startswith(("http://", "https://")) else base + url
        challenged = False
        attempt = 0
        while True:
            request_headers = dict(headers or {})
            token = self._tokens.get((base, f"repository:{repo}:{actions}"))
            if token:
                request_headers["Authorization"] = f"Bearer {token}"
            elif host in self._credentials:
                user, password = self._credentials[host]
                basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
                request_headers["Authorization"] = f"Basic {basic}"
            request = self._client.build_request(
                method,
                target,
                headers=request_headers,
                content=body() if body is not None else None,
                params=params,
            )
            try:
                response = self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt >= self._retries:
                    raise RegistryError(f"{method} {target}: {exc}") from exc
                attempt += 1
                time.sleep(0.5 * 2**attempt)
                continue
            # One fresh token per request: a cached token may lack a scope this request
            # needs (a mount also needs pull on the source repository).
            if response.status_code == 401 and not challenged:
                challenge = response.headers.get("www-authenticate", "")
                response.close()
                if not challenge.lower().startswith("bearer "):
                    raise RegistryError(f"{method} {target}: unauthorized ({challenge or 'no'})")
                self._fetch_token(base, host, repo, actions, challenge)
                challenged = True
                continue
            if response.status_code in _RETRY_STATUS and attempt < self._retries:
                response.close()
                attempt += 1
                time.sleep(0.5 * 2**attempt)
                continue
            return response

    def _fetch_token(self, base: str, host: str, repo: str, actions: str, challenge: str) -> None:
        """The registry token flow: ask the realm the `WWW-Authenticate` header names."""
        params = dict(_AUTH_PARAM.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"{host}: bearer challenge without a realm: {challenge}")
        scope = f"repository:{repo}:{actions}"
        # The challenge names every scope the request needs (several for a mount); ask for
        # exactly those, as the token specification says.
        scopes = params.get("scope", scope).split()
        query: list[tuple[str, str | int | float | bool | None]] = [("scope", s) for s in scopes]
        if "service" in params:
            query.append(("service", params["service"]))
        auth = None
        if host in self._credentials:
            auth = httpx.BasicAuth(*self._credentials[host])
        try:
            response = self._client.get(realm, params=query, auth=auth)
        except httpx.TransportError as exc:
            raise RegistryError(f"{host}: token service {realm} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise RegistryError(f"{host}: token service {realm} answered {response.status_code}")
        payload = response.json()
        token = payload.get("token") or payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{host}: token service {realm} returned no token")
        self._tokens[(base, scope)] = token

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> RegistryError:
        try:
            detail = response.read()[:500].decode("utf-8", "replace")
        except httpx.HTTPError:
            detail = ""
        return RegistryError(f"{what}: HTTP {response.status_code} {detail}".strip())

    # ------------------------------------------------------------------ pull

    def get_manifest(self, host: str, repo: str, reference: str) -> Manifest:
        """A manifest or index by tag or digest, digest-checked."""
        url = f"/v2/{repo}/manifests/{reference}"
        response = self._send(
            "GET", host, repo, url, headers={"Accept": ACCEPT_MANIFESTS}, stream=True
        )
        try:
            if response.status_code != 200:
                raise self._fail(response, f"manifest {host}/{repo}:{reference}")
            data = bytearray()
            for chunk in response.iter_bytes(CHUNK_SIZE):
                data.extend(chunk)
                if len(data) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"manifest {host}/{repo}:{reference} exceeds 4 MiB")
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            served_digest = response.headers.get("docker-content-digest")
        finally:
            response.close()
        body = bytes(data)
        digest = sha256_bytes(body)
        if is_digest(reference) and digest != reference:
            raise DigestMismatchError(
                f"manifest {host}/{repo}@{reference} hashes to {digest}: corrupt or tampered"
            )
        if served_digest and served_digest.startswith("sha256:") and served_digest != digest:
            raise DigestMismatchError(
                f"manifest {host}/{repo}:{reference}: registry says {served_digest}, "
                f"content hashes to {digest}"
            )
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            # Some registries answer application/json; the document names its own type.
            media_type = str(json.loads(body).get("mediaType", media_type))
        return Manifest(body, media_type, digest)

    def download_blob(
        self,
        host: str,
        repo: str,
        digest: str,
        size: int,
        dest: Path,
        partial: Path,
        on_progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Stream a blob into `partial`, verify its digest, then rename it to `dest`.

        A `partial` left by an interrupted run is continued with an HTTP Range request; a
        registry that ignores Range (answers 200) restarts from zero. Memory use is one chunk.
        """
        resumed_from = 0
        fetched = 0
        attempt = 0
        while True:
            hasher = hashlib.sha256()
            offset = 0
            if partial.exists():
                if partial.stat().st_size > size:
                    partial.unlink()
                else:
                    offset = hash_file_into(hasher, partial)
            if attempt == 0:
                resumed_from = offset
            try:
                got, hasher = self._download_range(
                    host, repo, digest, size, partial, hasher, offset, on_progress
                )
                fetched += got
                break
            except httpx.TransportError as exc:
                # The connection broke mid-blob: what reached the disk is kept and resumed.
                if attempt >= self._retries:
                    raise RegistryError(f"blob {host}/{repo}@{digest}: {exc}") from exc
                attempt += 1
                time.sleep(0.5 * 2**attempt)
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"blob {host}/{repo}@{digest} hashes to {actual}: discarded, run again"
            )
        os.replace(partial, dest)
        return DownloadResult(fetched=fetched, resumed_from=resumed_from)

    def _download_range(
        self,
        host: str,
        repo: str,
        digest: str,
        size: int,
        partial: Path,
        hasher: hashlib._Hash,
        offset: int,
        on_progress: ProgressCallback | None,
    ) -> tuple[int, hashlib._Hash]:
        if offset == size and size > 0:
            return 0, hasher
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        url = f"/v2/{repo}/blobs/{digest}"
        response = self._send("GET", host, repo, url, headers=headers, stream=True)
        fetched = 0
        try:
            if response.status_code == 206 and offset:
                mode = "ab"
            elif response.status_code == 200:
                if offset:
                    # The registry ignored Range: start the hash and the file again.
                    hasher = hashlib.sha256()
                    offset = 0
                mode = "wb"
            else:
                raise self._fail(response, f"blob {host}/{repo}@{digest}")
            done = offset
            with partial.open(mode) as handle:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    handle.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    fetched += len(chunk)
                    if on_progress is not None:
                        on_progress(done)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            response.close()
        return fetched, hasher

    def fetch_small_blob(self, host: str, repo: str, digest: str) -> bytes:
        """A config blob (a few KiB), digest-checked."""
        response = self._send("GET", host, repo, f"/v2/{repo}/blobs/{digest}", stream=True)
        try:
            if response.status_code != 200:
                raise self._fail(response, f"blob {host}/{repo}@{digest}")
            data = bytearray()
            for chunk in response.iter_bytes(CHUNK_SIZE):
                data.extend(chunk)
                if len(data) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"blob {host}/{repo}@{digest} is not a small document")
        finally:
            response.close()
        if sha256_bytes(bytes(data)) != digest:
            raise DigestMismatchError(f"blob {host}/{repo}@{digest} does not match its digest")
        return bytes(data)

    # ------------------------------------------------------------------ push

    def blob_exists(self, host: str, repo: str, digest: str) -> bool:
        """`HEAD` a blob: nothing is uploaded twice."""
        response = self._send("HEAD", host, repo, f"/v2/{repo}/blobs/{digest}", actions="pull,push")
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(response, f"HEAD blob {host}/{repo}@{digest}")

    def upload_blob(
        self,
        host: str,
        repo: str,
        digest: str,
        source: Path | bytes,
        *,
        mount_from: str | None = None,
        chunk_size: int | None = None,
        on_progress: ProgressCallback | None = None,
        resume_location: str | None = None,
        on_session: SessionCallback | None = None,
    ) -> UploadOutcome:
        """Make `digest` exist in `repo`: `exists`, `mounted` or `uploaded`.

        Tries, in order: `HEAD` (already there), a cross-repository mount from `mount_from`,
        then an upload — monolithic `PUT` by default, `PATCH` chunks of `chunk_size` bytes
        when asked. A chunked upload reports its session URL and offset after every chunk
        (`on_session`); given that URL again (`resume_location`) it asks the registry how
        much it holds and continues from there instead of sending the blob again.
        """
        if self.blob_exists(host, repo, digest):
            return UploadOutcome("exists")
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        location: str | None = None
        offset = 0
        if resume_location and chunk_size:
            session = self._upload_status(host, repo, resume_location)
            if session is not None:
                location, offset = session
        resumed_from = offset
        if location is None:
            uploads = f"/v2/{repo}/blobs/uploads/"
            params = {"mount": digest, "from": mount_from} if mount_from else None
            response = self._send("POST", host, repo, uploads, actions="pull,push", params=params)
            response.close()
            if response.status_code == 201 and mount_from:
                return UploadOutcome("mounted")
            if response.status_code != 202 or "location" not in response.headers:
                raise self._fail(response, f"start upload {host}/{repo}")
            location = self._absolute(host, response.headers["location"])
        sent = 0
        if chunk_size:
            while offset < size:
                length = min(chunk_size, size - offset)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + length - 1}",
                    "Content-Length": str(length),
                }
                response = self._send(
                    "PATCH",
                    host,
                    repo,
                    location,
                    actions="pull,push",
                    headers=headers,
                    body=functools.partial(_iter_part, source, offset, length),
                )
                response.close()
                if response.status_code != 202:
                    raise self._fail(response, f"upload chunk {host}/{repo}@{digest}")
                location = self._absolute(host, response.headers["location"])
                offset += length
                sent += length
                if on_session is not None:
                    on_session(location, offset)
                if on_progress is not None:
                    on_progress(offset)
            final_body: BodyFactory = _constant(b"")
            final_headers = {"Content-Length": "0"}
        else:
            final_body = functools.partial(_iter_source, source, on_progress)
            final_headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            }
            sent = size
        url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
        response = self._send(
            "PUT", host, repo, url, actions="pull,push", headers=final_headers, body=final_body
        )
        response.close()
        if response.status_code != 201:
            raise self._fail(response, f"finish upload {host}/{repo}@{digest}")
        return UploadOutcome("uploaded", sent=sent, resumed_from=resumed_from)

    def _upload_status(self, host: str, repo: str, location: str) -> tuple[str, int] | None:
        """(location, bytes held) of an upload session, or None if the registry dropped it."""
        response = self._send("GET", host, repo, location, actions="pull,push")
        response.close()
        if response.status_code != 204:
            return None
        held = response.headers.get("range", "")
        match = re.match(r"^(?:bytes=)?0-(\d+)$", held)
        offset = int(match.group(1)) + 1 if match else 0
        return self._absolute(host, response.headers.get("location", location)), offset

    def put_manifest(
        self, host: str, repo: str, reference: str, data: bytes, media_type: str
    ) -> str:
        """Upload a manifest or index under a tag or digest; return its digest."""
        response = self._send(
            "PUT",
            host,
            repo,
            f"/v2/{repo}/manifests/{reference}",
            actions="pull,push",
            headers={"Content-Type": media_type},
            body=_constant(data),
        )
        response.close()
        if response.status_code != 201:
            raise self._fail(response, f"put manifest {host}/{repo}:{reference}")
        return sha256_bytes(data)

    def manifest_exists(self, host: str, repo: str, reference: str) -> bool:
        """`HEAD` a manifest by digest or tag."""
        response = self._send(
            "HEAD",
            host,
            repo,
            f"/v2/{repo}/manifests/{reference}",
            actions="pull,push",
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise self._fail(response, f"HEAD manifest {host}/{repo}:{reference}")

    def manifest_digest(self, host: str, repo: str, reference: str) -> str | None:
        """The digest a tag names (`HEAD`, `Docker-Content-Digest`), or None if absent."""
        response = self._send(
            "HEAD",
            host,
            repo,
            f"/v2/{repo}/manifests/{reference}",
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"HEAD manifest {host}/{repo}:{reference}")
        digest = str(response.headers.get("docker-content-digest", ""))
        if is_digest(digest):
            return digest
        # Without the header the digest is the hash of the exact bytes served.
        return self.get_manifest(host, repo, reference).digest

    def delete_manifest(self, host: str, repo: str, digest: str) -> bool:
        """`DELETE` a manifest by digest; False when it was already gone.

        Registries refuse with 405 unless deletion is enabled (`storage.delete.enabled` in
        docker-registry); that is reported, never ignored.
        """
        response = self._send(
            "DELETE", host, repo, f"/v2/{repo}/manifests/{digest}", actions="pull,push,delete"
        )
        response.close()
        if response.status_code in (200, 202):
            return True
        if response.status_code == 404:
            return False
        if response.status_code == 405:
            raise RegistryError(
                f"{host} refuses to delete manifests (HTTP 405): enable deletion in the "
                "registry (docker-registry: storage.delete.enabled: true)"
            )
        raise self._fail(response, f"DELETE manifest {host}/{repo}@{digest}")

    def delete_blob(self, host: str, repo: str, digest: str) -> bool:
        """`DELETE` a blob; False when the registry does not allow it (405) or lacks it."""
        response = self._send(
            "DELETE", host, repo, f"/v2/{repo}/blobs/{digest}", actions="pull,push,delete"
        )
        response.close()
        if response.status_code in (200, 202):
            return True
        if response.status_code in (404, 405):
            return False
        raise self._fail(response, f"DELETE blob {host}/{repo}@{digest}")

    def mount_blob(self, host: str, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount of `digest` from `from_repo`; True when it took."""
        response = self._send(
            "POST",
            host,
            repo,
            f"/v2/{repo}/blobs/uploads/",
            actions="pull,push",
            params={"mount": digest, "from": from_repo},
        )
        response.close()
        if response.status_code == 201:
            return True
        if response.status_code == 202 and "location" in response.headers:
            # The registry opened an upload session instead; cancel it, we have no bytes.
            cancel = self._send(
                "DELETE",
                host,
                repo,
                self._absolute(host, response.headers["location"]),
                actions="pull,push",
            )
            cancel.close()
            return False
        raise self._fail(response, f"mount {digest} into {host}/{repo}")

    def _paged(self, host: str, repo: str, url: str, key: str) -> list[str]:
        found: list[str] = []
        next_url: str | None = url
        while next_url:
            response = self._send("GET", host, repo, next_url)
            if response.status_code == 404:
                return found
            if response.status_code != 200:
                raise self._fail(response, f"GET {next_url}")
            found.extend(response.json().get(key) or [])
            link = response.headers.get("link", "")
            match = re.match(r"^<([^>]+)>", link)
            next_url = match.group(1) if match else None
        return found

    def tags(self, host: str, repo: str) -> list[str]:
        """Every tag of a repository (empty when the repository does not exist)."""
        return self._paged(host, repo, f"/v2/{repo}/tags/list?n=1000", "tags")

    def _absolute(self, host: str, location: str) -> str:
        if location.startswith(("http://", "https://")):
            return location
        return self.base_url(host) + location


def _constant(data: bytes) -> BodyFactory:
    def body() -> bytes:
        return data

    return body


def _iter_part(source: Path | bytes, offset: int, length: int) -> Iterator[bytes]:
    # A chunk streams from disk too: a 64 MiB chunk must not mean 64 MiB of memory.
    if isinstance(source, bytes):
        yield source[offset : offset + length]
        return
    with source.open("rb") as handle:
        handle.seek(offset)
        left = length
        while left > 0:
            piece = handle.read(min(CHUNK_SIZE, left))
            if not piece:
                raise RegistryError(f"{source} shrank while it was being uploaded")
            left -= len(piece)
            yield piece


def _iter_source(source: Path | bytes, on_progress: ProgressCallback | None) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    done = 0
    with source.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            done += len(chunk)
            if on_progress is not None:
                on_progress(done)
            yield chunk
