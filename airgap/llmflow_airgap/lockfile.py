"""The lockfile: `platform.yaml` with every moving part pinned by content.

`platform.yaml` names images by tag, charts by version and models by Hugging Face revision;
tags move and repositories get re-pushed, so `lock` records what each name resolved to *by
content* (image index and per-platform manifest digests, chart archive sha256, per-file
sha256 of model snapshots and wheels). `build` downloads by these digests only, so a bundle
built next month from the same lockfile is byte-identical or fails.

The schema lives here, once, as pydantic models; `llmflow-airgap schema --lock` exports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmflow_airgap.errors import LockfileError

LOCK_API_VERSION: Final = "llmflow.io/v1alpha1"
LOCK_KIND: Final = "PlatformLock"

Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PlatformManifest(_Strict):
    """One entry of an image index: the manifest for one platform."""

    platform: str = Field(description="os/architecture[/variant], e.g. linux/arm64/v8.")
    digest: Digest
    media_type: str = Field(alias="mediaType")
    size: int = Field(ge=0)


class LockedImage(_Strict):
    """An image tag resolved to the digest of what the registry serves for it."""

    reference: str = Field(description="The image as platform.yaml spells it (host/path:tag).")
    repository: str = Field(description="host/path")
    tag: str
    digest: Digest = Field(description="Digest of the index (or single manifest) the tag names.")
    media_type: str = Field(alias="mediaType")
    size: int = Field(ge=0)
    platforms: list[PlatformManifest] = Field(default_factory=list)
    components: list[str] = Field(min_length=1)

    @property
    def pinned(self) -> str:
        """`host/path:tag@digest`, the reference the air-gap overlay may use."""
        return f"{self.repository}:{self.tag}@{self.digest}"


class LockedChart(_Strict):
    """A chart version resolved to the sha256 of its `.tgz`."""

    component: str
    name: str
    version: str
    repository: str = Field(description="The repository platform.yaml names.")
    source: Literal["oci", "https", "file"] = Field(
        description="oci: an OCI artifact; https: a Helm repository index; file: a local .tgz."
    )
    url: str = Field(description="Where the archive was found (oci reference, URL or file name).")
    digest: Digest = Field(description="sha256 of the chart .tgz.")
    size: int = Field(ge=0)
    manifest_digest: Digest | None = Field(
        default=None, alias="manifestDigest", description="OCI charts: the artifact manifest."
    )


class LockedFile(_Strict):
    """One file of a model snapshot."""

    path: str
    sha256: Digest
    size: int = Field(ge=0)


class LockedModel(_Strict):
    """A model snapshot at a pinned revision with the sha256 of every file."""

    name: str
    component: str
    huggingface_repo: str = Field(alias="huggingfaceRepo")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$")
    files: list[LockedFile] = Field(min_length=1)

    @property
    def size(self) -> int:
        """Bytes of all files."""
        return sum(f.size for f in self.files)


class LockedWheel(_Strict):
    """A wheel (or sdist) of the offline wheelhouse."""

    filename: str
    name: str
    version: str
    sha256: Digest
    size: int = Field(ge=0)


class LockedDifyPlugin(_Strict):
    """A Dify plugin: its source package by sha256 and the wheels its requirements resolve to
    for the plugin daemon's Python and platform (see `llmflow_airgap.difyplugin`)."""

    id: str = Field(description="author/name")
    version: str
    source: str = Field(
        description="As platform.yaml names it (`marketplace`, an https:// URL or a file name)."
    )
    url: str | None = Field(
        default=None,
        description="Where `lock` downloaded the package (the marketplace endpoint or the "
        "https:// source, before any --dify-plugin-mirror); absent for a local file.",
    )
    sha256: Digest = Field(description="sha256 of the source .difypkg.")
    size: int = Field(ge=0)
    authorized_category: Literal["langgenius", "partner", "community"] = Field(
        alias="authorizedCategory"
    )
    source_verified: bool = Field(
        default=False,
        alias="sourceVerified",
        description="The source package's own signature verified with a key given to lock.",
    )
    source_signer: Digest | None = Field(
        default=None,
        alias="sourceSigner",
        description="The key that verified it: sha256 of its DER SubjectPublicKeyInfo "
        "(`openssl rsa -RSAPublicKey_in -in KEY.pem -pubout -outform DER | sha256sum`).",
    )
    source_signed_at: int | None = Field(
        default=None,
        alias="sourceSignedAt",
        description="Signing time the source package's signature covers (unix seconds).",
    )
    python_version: str = Field(alias="pythonVersion")
    architectures: list[str] = Field(min_length=1)
    wheels: list[LockedWheel] = Field(
        default_factory=list, description="Files of <dify-plugin-wheels>/<author>__<name>-<ver>/"
    )

    @property
    def download_url(self) -> str | None:
        """Where the source package is downloaded from (lockfiles written before `url`
        existed name an https:// source only in `source`)."""
        if self.url is not None:
            return self.url
        return self.source if self.source.startswith("https://") else None


class LockSource(_Strict):
    """The platform.yaml this lock was made from."""

    name: str
    version: str
    sha256: Digest = Field(description="sha256 of platform.yaml as read.")


class Lockfile(_Strict):
    """`platform.lock.yaml`."""

    api_version: Literal["llmflow.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["PlatformLock"]
    platform: LockSource
    images: list[LockedImage] = Field(default_factory=list)
    charts: list[LockedChart] = Field(default_factory=list)
    models: list[LockedModel] = Field(default_factory=list)
    wheels: list[LockedWheel] = Field(default_factory=list)
    dify_plugins: list[LockedDifyPlugin] = Field(alias="difyPlugins", default_factory=list)

    def to_document(self) -> dict[str, Any]:
        """The lockfile as plain data, keys spelled as in the file."""
        data: dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        if not data.get("difyPlugins"):
            # Lockfiles without plugins keep the shape (and bytes) they had before plugins.
            data.pop("difyPlugins", None)
        return data


def lockfile_json_schema() -> dict[str, Any]:
    """JSON schema of the lockfile (by alias)."""
    schema = Lockfile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://llmflow.io/schemas/platform.lock.schema.json"
    return schema


def dump_lockfile(lock: Lockfile, path: Path) -> None:
    """Write the lockfile as YAML, or JSON when the name ends in `.json` (atomic rename)."""
    document = lock.to_document()
    if path.suffix == ".json":
        text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    else:
        header = (
            "# Generated by `llmflow-airgap lock`; do not edit. Schema: llmflow_airgap.lockfile\n"
        )
        text = header + yaml.safe_dump(document, sort_keys=False, width=100)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def load_lockfile(path: Path) -> Lockfile:
    """Read and validate a lockfile (YAML or JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockfileError(f"cannot read lockfile {path}: {exc}") from exc
    try:
        raw: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise LockfileError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from exc
    try:
        return Lockfile.model_validate(raw)
    except ValidationError as exc:
        raise LockfileError(f"{path} does not match the lockfile schema:\n{exc}") from exc
