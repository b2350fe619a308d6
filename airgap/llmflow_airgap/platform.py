"""The schema of `platform/platform.yaml`, the distribution's bill of materials.

Both the glue (`llmflow`) and the bundle tool read this file, so its shape is a pydantic model
here rather than ad-hoc dict access: typos fail loudly (`extra="forbid"`), cross-references
(namespaces, dependencies, profiles) are checked once at load time, and the JSON schema that
editors and CI use is exported from the same model (`llmflow-airgap schema`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmflow_airgap.errors import PlatformFileError
from llmflow_airgap.images import ImageRef, ImageRefError, parse_image

API_VERSION = "llmflow.io/v1alpha1"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SEMVERISH = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_HF_REVISION = re.compile(r"^[0-9a-f]{40}$")

DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL, max_length=63)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Profile(StrEnum):
    """Deployment sizes. Every component states which profiles install it."""

    MINIMAL = "minimal"
    STANDARD = "standard"
    HA = "ha"


class Layer(StrEnum):
    """Layers of ARCHITECTURE §2 (seed 004 §1.2)."""

    GATEWAY = "gateway"
    IDENTITY = "identity"
    APPLICATION = "application"
    GLUE = "glue"
    DATA_PIPELINE = "data-pipeline"
    STORE = "store"
    INFERENCE = "inference"
    LLMOPS = "llmops"
    INFRA = "infra"


class DifyTenancyMode(StrEnum):
    """ARCHITECTURE §5: Dify's licence decides how tenants map onto Dify installations."""

    INSTANCE_PER_TENANT = "instance-per-tenant"
    SHARED = "shared"
    LICENSED_MULTI_WORKSPACE = "licensed-multi-workspace"


class PodSecurityLevel(StrEnum):
    """Kubernetes Pod Security Standards level enforced on a namespace."""

    RESTRICTED = "restricted"
    BASELINE = "baseline"
    PRIVILEGED = "privileged"


class Metadata(_Strict):
    name: DnsLabel
    version: str = Field(description="Version of the distribution (semver).")

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not _SEMVERISH.match(value):
            raise ValueError(f"version {value!r} is not semver")
        return value


class Registry(_Strict):
    """The site registry every image is mirrored to (air-gap overlay)."""

    host: str = Field(description="Host[:port] the air-gap overlays point images at.")
    pull_secret: DnsLabel = Field(alias="pullSecret")


class Namespace(_Strict):
    name: DnsLabel
    purpose: str
    pod_security: PodSecurityLevel = Field(alias="podSecurity")


class ProfileSpec(_Strict):
    """What a profile means in hardware and in replicas (seed 004 §4.1, §5)."""

    description: str
    nodes: int = Field(ge=1)
    gpus: int = Field(ge=0)
    replicas_from: str = Field(
        alias="replicasFrom", description="Where its replica counts come from."
    )
    pod_disruption_budgets: bool = Field(alias="podDisruptionBudgets")
    autoscaling: bool


class Tenancy(_Strict):
    dify_mode: DifyTenancyMode = Field(alias="difyMode")
    example_tenants: list[DnsLabel] = Field(alias="exampleTenants", default_factory=list)


class Chart(_Strict):
    """Where a chart comes from and which copy of its data files validates our values."""

    repository: str = Field(description="https:// Helm repository or oci:// registry path.")
    name: str
    version: str
    reference: str | None = Field(
        default=None,
        description="Path of the chart's reference data (values.yaml, values.schema.json) "
        "relative to the charts directory given to `llmflow-airgap validate`; null when no "
        "reference copy exists (the key check is then reported as skipped).",
    )
    licence: str

    @field_validator("repository")
    @classmethod
    def _repo_scheme(cls, value: str) -> str:
        if not value.startswith(("https://", "oci://")):
            raise ValueError("chart repository must be https:// or oci://")
        return value

    @field_validator("version")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not _SEMVERISH.match(value):
            raise ValueError(f"chart version {value!r} must be an exact semver, not a range")
        return value


class ModelWeights(_Strict):
    """Model files the component serves, pinned to a Hugging Face commit."""

    name: str = Field(description="Name the model is served under (OpenAI `model`).")
    huggingface_repo: str = Field(alias="huggingfaceRepo", pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(description="Full 40-hex commit of the HF repository.")
    licence: str
    size_gib: float = Field(alias="sizeGiB", gt=0)
    profiles: list[Profile]

    @field_validator("revision")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not _HF_REVISION.match(value):
            raise ValueError("revision must be a full 40-hex commit, not a branch or tag")
        return value


class FreeFormPath(_Strict):
    """A values key path whose children the chart accepts without listing them."""

    path: str = Field(description="Dotted key path; `*` matches one key or list index.")
    reason: str


class ValuesFiles(_Strict):
    base: str
    profiles: dict[Profile, str] = Field(default_factory=dict)
    airgap: str
    airgap_by_profile: dict[Profile, str] = Field(
        alias="airgapByProfile",
        default_factory=dict,
        description="Per-profile air-gap overlays, for charts whose images sit in lists "
        "(Helm replaces lists whole, so one overlay cannot patch every profile's list).",
    )
    free_form: list[FreeFormPath] = Field(alias="freeForm", default_factory=list)

    def layered(self, profile: Profile, airgap: bool = True) -> list[str]:
        """Files in the order `helm -f` receives them for a profile (later wins)."""
        files = [self.base]
        if profile in self.profiles:
            files.append(self.profiles[profile])
        if airgap:
            files.append(self.airgap_by_profile.get(profile, self.airgap))
        return files

    def airgap_files(self) -> list[str]:
        return [self.airgap, *self.airgap_by_profile.values()]

    def all_files(self) -> list[str]:
        return [self.base, *self.profiles.values(), *self.airgap_files()]


class HealthCheck(_Strict):
    """A gate the installer waits on before installing dependants."""

    kind: Literal["rollout", "http", "tcp", "job"]
    target: str = Field(description="kind/name of the workload, or the service for http/tcp.")
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = None
    timeout_seconds: int = Field(alias="timeoutSeconds", default=600, ge=10)

    @model_validator(mode="after")
    def _network_needs_port(self) -> HealthCheck:
        if self.kind in {"http", "tcp"} and self.port is None:
            raise ValueError(f"{self.kind} health check needs a port")
        if self.kind == "http" and not self.path:
            raise ValueError("http health check needs a path")
        return self


class SsoClient(_Strict):
    """The Keycloak client a component logs users in with (realm `llmflow`)."""

    client_id: DnsLabel = Field(alias="clientId")
    access: Literal["confidential", "public", "bearer-only"]
    flows: list[Literal["authorization-code", "client-credentials", "device"]]
    redirect_paths: list[str] = Field(alias="redirectPaths", default_factory=list)
    secret: str | None = Field(
        default=None, description="Name of the Secret holding the client secret."
    )


class SecretSpec(_Strict):
    """A Kubernetes Secret the component reads; created by the installer, never in values."""

    name: DnsLabel
    keys: list[str] = Field(min_length=1)
    purpose: str


class Component(_Strict):
    """One Helm release of the distribution."""

    name: DnsLabel
    description: str
    layer: Layer
    namespace: DnsLabel
    scope: Literal["platform", "tenant"] = Field(
        default="platform",
        description="`tenant`: installed once per tenant namespace (Dify instance-per-tenant).",
    )
    chart: Chart
    app_version: str = Field(alias="appVersion")
    app_licence: str = Field(alias="appLicence")
    why: str = Field(description="Why this chart and image were chosen over the alternatives.")
    profiles: list[Profile] = Field(min_length=1)
    images: list[str] = Field(min_length=1)
    models: list[ModelWeights] = Field(default_factory=list)
    depends_on: list[DnsLabel] = Field(alias="dependsOn", default_factory=list)
    values: ValuesFiles
    health_checks: list[HealthCheck] = Field(alias="healthChecks", min_length=1)
    sso: SsoClient | None = None
    secrets: list[SecretSpec] = Field(default_factory=list)

    @field_validator("images")
    @classmethod
    def _images_pinned(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ref = parse_image(text)
            except ImageRefError as exc:
                raise ValueError(str(exc)) from exc
            if text.split("/")[0] != ref.host:
                raise ValueError(f"image {text!r} must name its registry host explicitly")
            if ref.tag is None or ref.tag == "latest":
                raise ValueError(f"image {text!r} must be pinned to a version tag")
        if len(set(value)) != len(value):
            raise ValueError("duplicate image")
        return value

    def image_refs(self) -> list[ImageRef]:
        return [parse_image(text) for text in self.images]


class Monitoring(_Strict):
    """Alert rules and dashboards provisioned through kube-prometheus-stack."""

    rule_files: list[str] = Field(alias="ruleFiles")
    rule_tests: list[str] = Field(alias="ruleTests", default_factory=list)
    dashboards: list[str]
    provisioned_by: DnsLabel = Field(alias="provisionedBy")


class ManifestSet(_Strict):
    """Our own manifests (a repo-relative glob) and the profiles that apply them."""

    path: str = Field(min_length=1)
    profiles: list[Profile] = Field(default_factory=lambda: list(Profile), min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_glob(cls, data: object) -> object:
        # a bare string is a glob applied in every profile
        return {"path": data} if isinstance(data, str) else data


Architecture = Literal["x86_64", "aarch64"]


def _default_architectures() -> list[Architecture]:
    return ["x86_64"]


MARKETPLACE_SOURCE: Final = "marketplace"
"""`source: marketplace`: Dify's marketplace download endpoint for the plugin's version."""


class DifyPlugin(_Strict):
    """A Dify plugin package the bundle repackages with its wheels and re-signs (issue 10).

    Named like an image is named by tag: author/name, version and where it comes from. `lock`
    (the connected step) fetches the package, checks that its own signature verifies with a
    key the operator trusts (Dify's official marketplace key, `--dify-plugin-source-key`) and
    records its sha256 and size in the lockfile, which `build` then holds it to. A `sha256`
    here is optional: when present the package must also hash to it, and it lets `lock`
    accept a package no trusted key signed (a community package from a file or URL).
    """

    id: str = Field(
        pattern=r"^[a-z0-9_-]{1,64}/[a-z0-9_-]{1,128}$",
        description="`author/name` as in the package's manifest.yaml.",
    )
    version: str = Field(pattern=r"^[0-9]{1,4}(\.[0-9]{1,4}){1,3}(-\w{1,16})?$")
    source: str = Field(
        default=MARKETPLACE_SOURCE,
        description="`marketplace` (default): Dify's marketplace download endpoint "
        "`<marketplace>/api/v1/plugins/<author>/<name>/<version>/download`; or an https:// "
        "URL of the .difypkg; or its file name in the directory given to `lock`/`build` with "
        "--dify-plugins-dir.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Of the source package, when known beforehand; `lock` records it anyway. "
        "Without it `lock` needs a --dify-plugin-source-key the package's signature verifies "
        "with.",
    )
    purpose: str
    authorized_category: Literal["langgenius", "partner", "community"] | None = Field(
        default=None,
        alias="authorizedCategory",
        description="Category written into the re-signed package's verification file; "
        "default `langgenius` for langgenius plugins, `community` otherwise.",
    )
    architectures: list[Architecture] = Field(
        default_factory=_default_architectures,
        min_length=1,
        description="CPU architectures of the plugin daemon nodes (which wheels to ship).",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value == MARKETPLACE_SOURCE:
            return value
        if "://" in value and not value.startswith("https://"):
            raise ValueError("plugin source must be `marketplace`, https:// or a file name")
        if "://" not in value and ("/" in value or not value.endswith(".difypkg")):
            raise ValueError("plugin source file must be a bare `<name>.difypkg`")
        return value

    @property
    def author(self) -> str:
        """The `author` half of the id."""
        return self.id.split("/", 1)[0]

    @property
    def name(self) -> str:
        """The `name` half of the id."""
        return self.id.split("/", 1)[1]

    @property
    def is_local(self) -> bool:
        """The source is a file of --dify-plugins-dir (nothing to download)."""
        return self.source != MARKETPLACE_SOURCE and "://" not in self.source


class Platform(_Strict):
    """The whole distribution: `platform/platform.yaml`."""

    api_version: Literal["llmflow.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Platform"]
    metadata: Metadata
    registry: Registry
    tenancy: Tenancy
    namespaces: list[Namespace] = Field(min_length=1)
    profiles: dict[Profile, ProfileSpec]
    components: list[Component] = Field(min_length=1)
    manifests: list[ManifestSet] = Field(
        default_factory=list,
        description="Our own Kubernetes manifests: a repo-relative glob, or {path, profiles} "
        "for manifests only some profiles apply (e.g. HPAs and PDBs only in `ha`).",
    )
    monitoring: Monitoring
    dify_plugins: list[DifyPlugin] = Field(
        alias="difyPlugins",
        default_factory=list,
        description="Dify plugins shipped offline: repackaged with wheels, re-signed with "
        "our key, installed through the console API (`llmflow dify plugins install`).",
    )

    @model_validator(mode="after")
    def _cross_references(self) -> Platform:
        problems = list(_cross_reference_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def manifests_for(self, profile: Profile) -> list[str]:
        """The manifest globs a profile applies, in file order."""
        return [m.path for m in self.manifests if profile in m.profiles]

    def component(self, name: str) -> Component:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise KeyError(name)

    def install_order(self) -> list[Component]:
        """Components in dependency order (stable: file order among independent ones)."""
        done: set[str] = set()
        order: list[Component] = []
        pending = list(self.components)
        while pending:
            ready = [c for c in pending if set(c.depends_on) <= done]
            # Cycles are rejected by the model validator, so `ready` is never empty here.
            for comp in ready:
                order.append(comp)
                done.add(comp.name)
            pending = [c for c in pending if c.name not in done]
        return order

    def images_by_path(self) -> dict[str, list[tuple[str, ImageRef]]]:
        """Every image of the BOM keyed by repository path (the mirror key)."""
        out: dict[str, list[tuple[str, ImageRef]]] = {}
        for comp in self.components:
            for ref in comp.image_refs():
                out.setdefault(ref.path, []).append((comp.name, ref))
        return out


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _cross_reference_problems(platform: Platform) -> Iterator[str]:
    names = [c.name for c in platform.components]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            yield f"component {name!r} is declared twice"
        seen.add(name)
    namespaces = {ns.name for ns in platform.namespaces}
    for comp in platform.components:
        if comp.scope == "platform" and comp.namespace not in namespaces:
            yield f"component {comp.name!r}: namespace {comp.namespace!r} is not declared"
        for dep in comp.depends_on:
            if dep not in seen:
                yield f"component {comp.name!r} depends on unknown component {dep!r}"
        for profile in comp.values.profiles:
            if profile not in comp.profiles:
                yield f"component {comp.name!r}: overlay for {profile} it is not installed in"
        for model in comp.models:
            extra = set(model.profiles) - set(comp.profiles)
            if extra:
                yield f"component {comp.name!r}: model {model.name!r} in profiles {sorted(extra)}"
        for dep in comp.depends_on:
            if dep in seen:
                dep_profiles = set(platform.component(dep).profiles)
                missing = set(comp.profiles) - dep_profiles
                if missing:
                    yield (
                        f"component {comp.name!r} depends on {dep!r}, which is not installed "
                        f"in {sorted(missing)}"
                    )
    cycle = _find_cycle({c.name: list(c.depends_on) for c in platform.components})
    if cycle:
        yield "dependency cycle: " + " -> ".join(cycle)
    for profile in Profile:
        if profile not in platform.profiles:
            yield f"profile {profile} is not described"
    if platform.monitoring.provisioned_by not in seen:
        name = platform.monitoring.provisioned_by
        yield f"monitoring.provisionedBy names unknown component {name!r}"
    by_path: dict[str, set[str]] = {}
    for comp in platform.components:
        for ref in comp.image_refs():
            by_path.setdefault(ref.path, set()).add(ref.host)
    for path, hosts in sorted(by_path.items()):
        if len(hosts) > 1:
            yield f"image path {path!r} comes from several registries {sorted(hosts)}: mirror clash"
    plugin_ids = [p.id for p in platform.dify_plugins]
    for plugin_id in sorted({i for i in plugin_ids if plugin_ids.count(i) > 1}):
        yield f"dify plugin {plugin_id!r} is declared twice"


def load_platform(path: Path) -> Platform:
    """Read and validate `platform.yaml`; raise `PlatformFileError` with every problem."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlatformFileError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PlatformFileError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return Platform.model_validate(raw)
    except ValidationError as exc:
        raise PlatformFileError(f"{path} does not match the platform schema:\n{exc}") from exc


def platform_json_schema() -> dict[str, Any]:
    """The JSON schema of `platform.yaml` (by alias, as the file spells keys)."""
    schema = Platform.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://llmflow.io/schemas/platform.schema.json"
    return schema
