"""Container image references: parsing, normalisation and the site-registry mirror rule.

Upstream values spell images in many ways (`nginx`, `docker.io/library/nginx:1.27`,
`{registry, repository, tag}` dicts, GPU-operator style `{repository, image, version}`).
The bill of materials and the air-gap overlay can only be compared once every spelling is
reduced to one canonical form, `host/path:tag[@digest]`, which is what Docker itself resolves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class ImageRefError(ValueError):
    """A string that is not a valid image reference."""


@dataclass(frozen=True, order=True)
class ImageRef:
    """A canonical image reference (`host/path:tag[@digest]`)."""

    host: str
    path: str
    tag: str | None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`host/path`, the part a registry mirror rewrites."""
        return f"{self.host}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def without_digest(self) -> ImageRef:
        """The same image by tag only (values pin tags; the lock file adds digests)."""
        return ImageRef(self.host, self.path, self.tag, None)

    def mirrored(self, registry_host: str) -> ImageRef:
        """Where the image lives in the site registry.

        The rule is the one `crane`/`skopeo sync` and Zarf use: keep the repository path, drop
        the source host, so `docker.io/langgenius/dify-api` becomes
        `<site>/langgenius/dify-api`. Paths from different hosts could collide in theory; the
        validator reports any such collision in `platform.yaml`.
        """
        return ImageRef(registry_host, self.path, self.tag, self.digest)


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_image(text: str) -> ImageRef:
    """Parse `[host/]path[:tag][@digest]` the way the container runtime does."""
    ref = text.strip()
    if not ref or any(c.isspace() for c in ref):
        raise ImageRefError(f"not an image reference: {text!r}")
    digest: str | None = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise ImageRefError(f"bad digest in {text!r}")
    tag: str | None = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ImageRefError(f"bad tag in {text!r}")
    parts = ref.split("/")
    if len(parts) > 1 and _looks_like_host(parts[0]):
        host, path_parts = parts[0], parts[1:]
    else:
        host, path_parts = DOCKER_HUB, parts
    if host in {"index.docker.io", "registry-1.docker.io"}:
        host = DOCKER_HUB
    if host == DOCKER_HUB and len(path_parts) == 1:
        path_parts = ["library", *path_parts]
    for part in path_parts:
        if not _PATH_COMPONENT.match(part):
            raise ImageRefError(f"bad repository path component {part!r} in {text!r}")
    return ImageRef(host, "/".join(path_parts), tag, digest)


def join_image(registry: str | None, repository: str, tag: str | None) -> str:
    """Build a reference string from the split fields charts use."""
    base = f"{registry.rstrip('/')}/{repository.lstrip('/')}" if registry else repository
    return f"{base}:{tag}" if tag else base


# Keys whose string value is a whole image reference (CNPG, Neo4j, SeaweedFS spellings).
_IMAGE_STRING_KEYS = frozenset({"image", "imageName", "customImage", "imageOverride"})


def _string_image(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def images_in_values(tree: object, path: str = "") -> list[tuple[str, str]]:
    """Every image a values tree sets, as (key path, reference string).

    Recognised spellings: `{registry?, repository, tag|digest}`, `{repository, image,
    version}` (NVIDIA operators), `{image: "name", tag}` and plain `image:`/`imageName:`
    strings. A `{repository}` without a tag is reported with no tag so that the caller can
    flag it as unpinned rather than silently accept the chart's moving default.
    """
    found: list[tuple[str, str]] = []
    if isinstance(tree, list):
        for index, item in enumerate(tree):
            found.extend(images_in_values(item, f"{path}[{index}]"))
        return found
    if not isinstance(tree, dict):
        return found
    repository = _string_image(tree.get("repository"))
    image = _string_image(tree.get("image"))
    tag = tree.get("tag") if isinstance(tree.get("tag"), str | int | float) else None
    version = tree.get("version") if isinstance(tree.get("version"), str) else None
    registry = _string_image(tree.get("registry"))
    handled: set[str] = set()
    if repository and image and "tag" not in tree:
        ref = f"{repository.rstrip('/')}/{image}"
        found.append((path, f"{ref}:{version}" if version else ref))
        handled |= {"repository", "image", "version"}
    elif repository and ("tag" in tree or "digest" in tree or "registry" in tree):
        ref = join_image(registry, repository, str(tag) if tag not in (None, "") else None)
        digest = _string_image(tree.get("digest"))
        found.append((path, f"{ref}@{digest}" if digest else ref))
        handled |= {"repository", "tag", "registry", "digest"}
    elif image and "tag" in tree:
        found.append((path, join_image(registry, image, str(tag) if tag else None)))
        handled |= {"image", "tag", "registry"}
    for key, value in tree.items():
        if key in handled:
            continue
        child = f"{path}.{key}" if path else str(key)
        if key in _IMAGE_STRING_KEYS and _string_image(value):
            found.append((child, str(value)))
        else:
            found.extend(images_in_values(value, child))
    return found
