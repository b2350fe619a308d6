"""Models as OCI artifacts (`build --model-artifacts`), following the CNCF ModelPack spec.

Besides `models/<served-name>/...`, each model of the lockfile is described by an OCI image
manifest in the bundle's image layout, so `push` copies it into the site registry like any
image and a runtime (CRI-O / containerd image volumes, `modctl`, KitOps) can pull it.

Shape, from modelpack/model-spec (commit d78bf3231b4f, `docs/spec.md`,
`specs-go/v1/mediatype.go`, `specs-go/v1/annotations.go`, `specs-go/v1/config.go`):

* manifest `application/vnd.oci.image.manifest.v1+json` with
  `artifactType: application/vnd.cncf.model.manifest.v1+json`;
* config `application/vnd.cncf.model.config.v1+json`: `{descriptor, config, modelfs}` with
  `modelfs.type = "layers"` and `modelfs.diffIds` the layer digests (raw layers are not
  compressed, so a layer's diff ID is its digest);
* one **raw** layer per file — `application/vnd.cncf.model.weight.v1.raw` (weights),
  `...weight.config.v1.raw` (config.json, tokenizer files), `...doc.v1.raw` (README,
  LICENSE), `...code.v1.raw` (Python) — each annotated with `org.cncf.model.filepath` and
  `org.cncf.model.file.metadata+json` (fixed mode, owner and mtime, the spec's
  reproducibility guidance). A file whose kind is guessed from a name we do not know gets
  `org.cncf.model.file.mediatype.untested: "true"`. The spec recommends uncompressed weights
  (they do not compress, and runtimes would have to inflate them).

Because layers are raw, a layer blob *is* the model file byte for byte: its digest is the
sha256 the lockfile already pins. `build` therefore stores each file once and hard-links
`images/blobs/sha256/<hex>` to `models/<name>/<path>` (same directory tree, so the same
filesystem); the split tar keeps the link (tar's hard-link entries), so the artifact costs
only its config and manifest (a few KiB). Both paths are in the signed manifest and are
hashed by `verify`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from llmflow_airgap.digests import sha256_bytes
from llmflow_airgap.errors import BundleError
from llmflow_airgap.images import ImageRefError, parse_image
from llmflow_airgap.lockfile import LockedModel
from llmflow_airgap.registry import OCI_MANIFEST

ARTIFACT_TYPE: Final = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE: Final = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW: Final = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW: Final = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_RAW: Final = "application/vnd.cncf.model.doc.v1.raw"
CODE_RAW: Final = "application/vnd.cncf.model.code.v1.raw"
FILEPATH_ANNOTATION: Final = "org.cncf.model.filepath"
FILE_METADATA_ANNOTATION: Final = "org.cncf.model.file.metadata+json"
UNTESTED_ANNOTATION: Final = "org.cncf.model.file.mediatype.untested"
# Site repository of a model: `<site>/models/<served-name>:<revision>`.
REPOSITORY_PREFIX: Final = "models"

_WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ggml", ".onnx", ".h5", ".ckpt"}
    | {".msgpack", ".tflite", ".pb", ".npz", ".engine", ".plan"}
)
_CONFIG_SUFFIXES = frozenset(
    {".json", ".jsonl", ".yaml", ".yml", ".txt", ".model", ".tiktoken", ".jinja", ".vocab"}
)
_DOC_SUFFIXES = frozenset({".md", ".rst", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg"})
_CODE_SUFFIXES = frozenset({".py", ".sh", ".ipynb"})
_DOC_NAMES = ("readme", "license", "licence", "notice", "copying", "use_policy")
_EPOCH: Final = "1970-01-01T00:00:00Z"
_FILE_MODE: Final = 0o644
_REGULAR_FILE: Final = ord("0")


def classify(path: str) -> tuple[str, bool]:
    """(layer media type, whether the type is a guess) for one file of a snapshot."""
    name = PurePosixPath(path).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in _WEIGHT_SUFFIXES:
        return WEIGHT_RAW, False
    if name.startswith(_DOC_NAMES) or suffix in _DOC_SUFFIXES:
        return DOC_RAW, False
    if suffix in _CODE_SUFFIXES:
        return CODE_RAW, False
    if suffix in _CONFIG_SUFFIXES or name.startswith("tokenizer"):
        return WEIGHT_CONFIG_RAW, False
    return WEIGHT_CONFIG_RAW, True


def repository_name(served_name: str) -> str:
    """`models/<served name as a valid repository path component>`."""
    component = re.sub(r"[^a-z0-9._-]+", "-", served_name.lower())
    component = re.sub(r"([._-])[._-]+", r"\1", component).strip("._-")
    try:
        parse_image(f"{REPOSITORY_PREFIX}/{component}:x")
    except ImageRefError as exc:
        raise BundleError(f"model {served_name!r} gives no valid repository name: {exc}") from exc
    return f"{REPOSITORY_PREFIX}/{component}"


@dataclass(frozen=True)
class ModelLayer:
    """One file of the model as a raw layer: the blob is the file itself."""

    path: str
    digest: str
    size: int
    media_type: str
    untested: bool

    def descriptor(self) -> dict[str, Any]:
        """The layer's descriptor in the manifest."""
        metadata = {
            "name": self.path,
            "mode": _FILE_MODE,
            "uid": 0,
            "gid": 0,
            "size": self.size,
            "mtime": _EPOCH,
            "typeflag": _REGULAR_FILE,
        }
        annotations = {
            FILEPATH_ANNOTATION: self.path,
            FILE_METADATA_ANNOTATION: json.dumps(metadata, sort_keys=True, separators=(",", ":")),
        }
        if self.untested:
            annotations[UNTESTED_ANNOTATION] = "true"
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": annotations,
        }


@dataclass(frozen=True)
class ModelArtifact:
    """The config and manifest of one model's artifact, and the files its layers are."""

    model: str
    reference: str
    config: bytes
    manifest: bytes
    layers: list[ModelLayer] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """Digest of the manifest (what the registry serves the reference as)."""
        return sha256_bytes(self.manifest)

    def index_entry(self, ref_annotation: str) -> dict[str, Any]:
        """The descriptor of the manifest for the layout's `index.json`."""
        return {
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "digest": self.digest,
            "size": len(self.manifest),
            "annotations": {ref_annotation: self.reference},
        }


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def model_artifact(model: LockedModel) -> ModelArtifact:
    """The ModelPack artifact of a locked model (pure: everything comes from the lockfile)."""
    layers = []
    for item in model.files:
        media_type, untested = classify(item.path)
        layers.append(ModelLayer(item.path, item.sha256, item.size, media_type, untested))
    formats = sorted(
        {PurePosixPath(x.path).suffix.lstrip(".") for x in layers if x.media_type == WEIGHT_RAW}
    )
    source = f"https://huggingface.co/{model.huggingface_repo}"
    config = _json(
        {
            "descriptor": {
                "name": model.name,
                "title": model.huggingface_repo,
                "revision": model.revision,
                "sourceURL": source,
            },
            "config": {"format": formats[0]} if len(formats) == 1 else {},
            "modelfs": {"type": "layers", "diffIds": [x.digest for x in layers]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": sha256_bytes(config),
                "size": len(config),
            },
            "layers": [x.descriptor() for x in layers],
            "annotations": {
                "org.opencontainers.image.title": model.name,
                "org.opencontainers.image.source": source,
                "org.opencontainers.image.revision": model.revision,
            },
        }
    )
    reference = f"{repository_name(model.name)}:{model.revision}"
    return ModelArtifact(model.name, reference, config, manifest, layers)


Refuse = Callable[[str, str, str], None]


def check_model_artifact(blobs: Path, descriptor: dict[str, Any], refuse: Refuse) -> None:
    """`verify`'s ModelPack check of one index entry (blob presence and digests are checked
    by the generic layout walk): the config is a ModelPack config whose `modelfs.diffIds`
    are the raw layers, and every layer names the file it is."""
    digest = str(descriptor.get("digest", ""))
    rel = f"images/blobs/sha256/{digest.removeprefix('sha256:')}"
    try:
        manifest = json.loads((blobs / digest.removeprefix("sha256:")).read_bytes())
        config_descriptor = manifest["config"]
        config = json.loads(
            (blobs / str(config_descriptor["digest"]).removeprefix("sha256:")).read_bytes()
        )
        layers = list(manifest["layers"])
        diff_ids = list(config["modelfs"]["diffIds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        refuse(rel, "bad-blob", f"model artifact is unreadable: {exc}")
        return
    if manifest.get("artifactType") != ARTIFACT_TYPE or config_descriptor.get("mediaType") != (
        CONFIG_TYPE
    ):
        refuse(rel, "bad-blob", "is not a ModelPack artifact (artifactType or config type)")
        return
    raw = [x["digest"] for x in layers if str(x.get("mediaType", "")).endswith(".raw")]
    if diff_ids != raw or len(raw) != len(layers):
        refuse(rel, "bad-blob", "modelfs.diffIds of the config do not match the raw layers")
    for layer in layers:
        if not (layer.get("annotations") or {}).get(FILEPATH_ANNOTATION):
            refuse(rel, "bad-blob", f"layer {layer.get('digest')} has no {FILEPATH_ANNOTATION}")
