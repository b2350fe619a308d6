"""Per-tenant Dify releases from the overlays `llmflow tenant apply` renders.

In `instance-per-tenant` mode (ARCHITECTURE §5) the tenant control plane renders, for each
tenant, `<data_dir>/tenants/dify/<tenant>.values.yaml`: a Helm values overlay of the dify chart
that separates the tenant on the shared stores (PostgreSQL databases `dify_<t>` and
`dify_plugin_<t>`, a Valkey database pair, the tenant's bucket), headed by two comment lines
that name the tenant and the `helm upgrade --install` command (`glue/llmflow/tenancy/dify.py`,
`DifyReconciler._write`). `install --tenant-values DIR` turns every such file into one more
release of the platform's dify chart, in the namespace the command names.

The glue package is not installed on the install host, so the contract is restated here and
checked strictly, because the overlay is the last `-f` and would win over everything else:

* the file name's tenant and the header's tenant are the same, and the database names are
  the ones `database_name` derives from that tenant (a copied file is refused);
* the release is `dify` and the chart file the one the bundle ships for the dify component;
* only the keys `tenant_values` renders are set, with their types; the Valkey pair is
  `(app, app + 1)` inside `REDIS_DATABASES`, and no two tenants share a pair or a database;
* the merged values of each tenant validate against the chart's own `values.schema.json`,
  read from the chart archive in the bundle (Helm would refuse them later, mid-install).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from llmflow_airgap.errors import AirgapError
from llmflow_airgap.values import coalesce

# Restated from glue/llmflow/tenancy/dify.py (RELEASE, REDIS_DB_BASE, REDIS_DATABASES, the
# header of `_write` and `tenant_values`); tests render overlays with the glue's own code.
RELEASE: Final = "dify"
OVERLAY_SUFFIX: Final = ".values.yaml"
REDIS_DB_BASE: Final = 2
REDIS_DATABASES: Final = 64
_HEADER = re.compile(
    r"^# Rendered by `llmflow tenant apply` \(dify, tenant (?P<tenant>[^)\s]+)\)", re.MULTILINE
)
_INSTALL = re.compile(
    r"^# Install: helm upgrade --install (?P<release>\S+) (?P<chart>\S+) "
    r"--namespace (?P<namespace>\S+)",
    re.MULTILINE,
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Every leaf `tenant_values` renders, with its type.
OVERLAY_KEYS: Final[dict[tuple[str, ...], type]] = {
    ("externalPostgres", "database", "api"): str,
    ("externalPostgres", "database", "pluginDaemon"): str,
    ("externalRedis", "db", "app"): int,
    ("externalRedis", "db", "celery"): int,
    ("externalS3", "bucketName", "api"): str,
    ("externalS3", "bucketName", "pluginDaemon"): str,
}


class TenantOverlayError(AirgapError):
    """A tenant overlay is not one `llmflow tenant apply` rendered, or contradicts another."""


def database_name(prefix: str, tenant: str) -> str:
    """The tenant's PostgreSQL database, as `llmflow.tenancy.dify.database_name` names it."""
    return f"{prefix}_{tenant.replace('-', '_')}"[:63]


@dataclass(frozen=True)
class TenantOverlay:
    """One tenant's overlay file, checked."""

    tenant: str
    namespace: str
    file: Path
    chart_file: str
    values: dict[str, Any]
    sha256: str

    @property
    def databases(self) -> tuple[str, str]:
        """(api database, plugin daemon database)."""
        database = self.values["externalPostgres"]["database"]
        return str(database["api"]), str(database["pluginDaemon"])

    @property
    def redis_pair(self) -> tuple[int, int]:
        """(app, celery) Valkey databases."""
        db = self.values["externalRedis"]["db"]
        return int(db["app"]), int(db["celery"])


def _leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*path, str(key)))
    else:
        yield path, node


def read_overlay(path: Path, chart_file: str) -> TenantOverlay:
    """Read and check one `<tenant>.values.yaml` (see the module doc for the rules)."""
    name = path.name
    tenant = name.removesuffix(OVERLAY_SUFFIX)
    try:
        text = path.read_text(encoding="utf-8")
        document: Any = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TenantOverlayError(f"tenant overlay {path} cannot be read: {exc}") from exc
    header = _HEADER.search(text)
    if header is None:
        raise TenantOverlayError(
            f"{path} was not rendered by `llmflow tenant apply` (no '# Rendered by' header)"
        )
    if header["tenant"] != tenant:
        raise TenantOverlayError(
            f"{path}: the file is named for tenant {tenant!r} but was rendered for tenant "
            f"{header['tenant']!r}; re-run `llmflow tenant apply` instead of copying overlays"
        )
    install = _INSTALL.search(text)
    if install is None:
        raise TenantOverlayError(f"{path}: the '# Install: helm upgrade --install' line is missing")
    if install["release"] != RELEASE:
        raise TenantOverlayError(
            f"{path}: renders release {install['release']!r}, install expects {RELEASE!r}"
        )
    if install["chart"] != chart_file:
        raise TenantOverlayError(
            f"{path} was rendered for chart {install['chart']}, the bundle installs dify from "
            f"{chart_file}: re-render it with the glue of this release"
        )
    namespace = install["namespace"]
    if not _DNS_LABEL.match(namespace):
        raise TenantOverlayError(f"{path}: namespace {namespace!r} is not a DNS label")
    if not isinstance(document, dict):
        raise TenantOverlayError(f"{path}: the overlay is not a YAML mapping")
    found: dict[tuple[str, ...], Any] = dict(_leaves(document))
    unexpected = sorted(".".join(p) for p in found if p not in OVERLAY_KEYS)
    if unexpected:
        raise TenantOverlayError(
            f"{path} sets keys `llmflow tenant apply` does not render: {', '.join(unexpected)} "
            "(a tenant overlay may only select the tenant's databases, Valkey pair and bucket)"
        )
    for key, kind in OVERLAY_KEYS.items():
        where = ".".join(key)
        if key not in found:
            raise TenantOverlayError(f"{path}: {where} is missing")
        value = found[key]
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise TenantOverlayError(f"{path}: {where} must be a non-empty {kind.__name__}")
    overlay = TenantOverlay(
        tenant=tenant,
        namespace=namespace,
        file=path,
        chart_file=chart_file,
        values=document,
        sha256="sha256:" + hashlib.sha256(text.encode()).hexdigest(),
    )
    expected = (database_name("dify", tenant), database_name("dify_plugin", tenant))
    if overlay.databases != expected:
        raise TenantOverlayError(
            f"{path}: databases {overlay.databases} belong to another tenant "
            f"(tenant {tenant} uses {expected})"
        )
    app, celery = overlay.redis_pair
    if celery != app + 1 or app < REDIS_DB_BASE or celery >= REDIS_DATABASES:
        raise TenantOverlayError(
            f"{path}: Valkey databases app={app}, celery={celery} are not a pair "
            f"({REDIS_DB_BASE} <= app, celery = app + 1 < {REDIS_DATABASES})"
        )
    return overlay


def read_overlays(directory: Path, chart_file: str) -> list[TenantOverlay]:
    """Every `<tenant>.values.yaml` of `directory`, checked one by one and against each other."""
    if not directory.is_dir():
        raise TenantOverlayError(f"--tenant-values {directory} is not a directory")
    overlays = [read_overlay(p, chart_file) for p in sorted(directory.glob(f"*{OVERLAY_SUFFIX}"))]
    if not overlays:
        raise TenantOverlayError(
            f"--tenant-values {directory} holds no <tenant>{OVERLAY_SUFFIX} file "
            "(`llmflow tenant apply` writes them to <data_dir>/tenants/dify)"
        )
    seen: dict[Any, str] = {}
    for overlay in overlays:
        claims: list[tuple[str, Any]] = [
            ("namespace", overlay.namespace),
            ("Valkey databases", overlay.redis_pair),
            *(("database", d) for d in overlay.databases),
        ]
        for what, value in claims:
            other = seen.get((what, value))
            if other is not None:
                raise TenantOverlayError(
                    f"tenants {other} and {overlay.tenant} both use {what} {value}: "
                    "re-run `llmflow tenant apply` (it allocates them uniquely)"
                )
            seen[(what, value)] = overlay.tenant
    return overlays


def _chart_member(archive: tarfile.TarFile, chart_name: str, file: str) -> bytes | None:
    try:
        member = archive.getmember(f"{chart_name}/{file}")
    except KeyError:
        return None
    handle = archive.extractfile(member)
    return handle.read() if handle is not None else None


def chart_schema_errors(chart: Path, chart_name: str, values: dict[str, Any]) -> list[str]:
    """Errors of `values` (coalesced over the chart's defaults) against the
    `values.schema.json` inside a chart archive; empty when the chart has no schema."""
    from jsonschema import Draft7Validator

    try:
        with tarfile.open(chart, "r:gz") as archive:
            schema_raw = _chart_member(archive, chart_name, "values.schema.json")
            defaults_raw = _chart_member(archive, chart_name, "values.yaml")
    except (OSError, tarfile.TarError) as exc:
        raise TenantOverlayError(f"cannot read chart archive {chart}: {exc}") from exc
    if schema_raw is None:
        return []
    schema = json.loads(schema_raw)
    defaults: Any = yaml.safe_load(io.BytesIO(defaults_raw)) if defaults_raw else {}
    merged = coalesce(defaults if isinstance(defaults, dict) else {}, values)
    validator = Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}"
        for e in sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path))
    ]
