"""Where the non-image inputs of a bundle come from: chart archives, model snapshots, wheels.

The install host never talks to Hugging Face or PyPI, and neither does `lock`: model
snapshots and wheels are read from directories an operator filled beforehand (a Hugging Face
cache, `pip download -d`). Charts come from where `platform.yaml` says — an OCI registry, a
Helm repository index over HTTP(S) (optionally through a mirror prefix), or a local `.tgz`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from llmflow_airgap.digests import CHUNK_SIZE
from llmflow_airgap.errors import LockfileError

HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"

# Files of a Hugging Face snapshot that are bookkeeping, not model content.
_SKIPPED_MODEL_DIRS = frozenset({".git", ".cache", ".huggingface"})
_WHEEL = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$"
)
_SDIST = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+?)-(?P<version>\d[^-]*)\.(tar\.gz|zip)$")


def rewrite_url(url: str, mirrors: Mapping[str, str]) -> str:
    """Apply the longest matching `source-prefix=mirror-prefix` rule to a URL."""
    for source in sorted(mirrors, key=len, reverse=True):
        if url.startswith(source):
            return mirrors[source].rstrip("/") + url[len(source.rstrip("/")) :]
    return url


def parse_url_mirror(spec: str) -> tuple[str, str]:
    """Parse `https://charts.example.com=http://127.0.0.1:8080/charts`."""
    source, sep, target = spec.partition("=")
    if not sep or not source.startswith(("http://", "https://")) or not target:
        raise LockfileError(f"chart mirror {spec!r} must look like https://repo=http://mirror")
    return source.rstrip("/"), target.rstrip("/")


def stream_url(client: httpx.Client, url: str) -> Iterator[bytes]:
    """GET a URL in chunks (a chart archive), raising `LockfileError` on failure."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise LockfileError(f"GET {url}: HTTP {response.status_code}")
            yield from response.iter_bytes(CHUNK_SIZE)
    except httpx.TransportError as exc:
        raise LockfileError(f"GET {url}: {exc}") from exc


@dataclass(frozen=True)
class HttpChart:
    """A chart archive found through a Helm repository's `index.yaml`."""

    url: str
    index_digest: str | None


def find_in_helm_index(index: object, repository: str, name: str, version: str) -> HttpChart:
    """The archive URL of `name` `version` in a parsed Helm `index.yaml`."""
    entries = index.get("entries", {}) if isinstance(index, dict) else {}
    for entry in entries.get(name, []) or []:
        if str(entry.get("version")) != version:
            continue
        urls = entry.get("urls") or []
        if not urls:
            break
        url = str(urls[0])
        if not url.startswith(("http://", "https://")):
            url = f"{repository.rstrip('/')}/{url.lstrip('/')}"
        digest = entry.get("digest")
        return HttpChart(url, f"sha256:{digest}" if isinstance(digest, str) else None)
    raise LockfileError(f"chart {name} {version} is not in the index of {repository}")


def model_snapshot_dir(models_dir: Path, repo: str, revision: str) -> Path:
    """The snapshot of `repo` at `revision` in a Hugging Face cache or a plain tree.

    Accepted layouts: `<dir>/models--<org>--<name>/snapshots/<revision>/` (what
    `huggingface-cli download --cache-dir <dir>` writes) and `<dir>/<org>/<name>/<revision>/`.
    """
    org, name = repo.split("/", 1)
    candidates = [
        models_dir / f"models--{org}--{name}" / "snapshots" / revision,
        models_dir / org / name / revision,
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise LockfileError(f"model {repo}@{revision} not found in --models-dir (tried {tried})")


def model_files(snapshot: Path) -> list[Path]:
    """Files of a snapshot, sorted, relative to it (symlinks into the HF blob store followed)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(snapshot, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_MODEL_DIRS)
        for name in files:
            found.append((Path(root) / name).relative_to(snapshot))
    return sorted(found)


def wheel_name_version(filename: str) -> tuple[str, str] | None:
    """(normalised name, version) of a wheel or sdist file name, or None if it is neither."""
    match = _WHEEL.match(filename) or _SDIST.match(filename)
    if not match:
        return None
    name = re.sub(r"[-_.]+", "-", match.group("name")).lower()
    return name, match.group("version")


def sha256_stream(chunks: Iterator[bytes]) -> tuple[str, int]:
    """(`sha256:<hex>`, size) of a byte stream."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size
