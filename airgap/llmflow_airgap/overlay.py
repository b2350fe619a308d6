"""The install-time air-gap overlay: every image at the site registry, pinned by digest.

The checked-in `values-airgap.yaml` files point images at the stand-in host of
`platform.yaml` (`registry.host`) by tag. At install time the values Helm receives are
rewritten once more: the host becomes the real site registry and every tag gains the digest
the lockfile recorded, so what runs is byte-for-byte what was locked, pushed and verified.

The rewrite works on parsed references (`images.parse_image`), never on string surgery: the
failure users report with other tools is a `host/path:tag@sha256:…` reference split at the
wrong colon, or a digest dropped when the host is replaced. A reference that already carries
a digest keeps it — and must agree with the lockfile, or the install stops.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from llmflow_airgap.errors import AirgapError
from llmflow_airgap.images import ImageRef, ImageRefError, parse_image
from llmflow_airgap.lockfile import LockedImage

# Keys whose string value is a whole image reference (same list as images.py).
_IMAGE_STRING_KEYS = frozenset({"image", "imageName", "customImage", "imageOverride"})
# What `plan` shows in place of a digest before there is a lockfile.
UNRESOLVED_DIGEST: Final = "<digest resolved by `lock`>"


class OverlayError(AirgapError):
    """An image of the values cannot be pinned: not in the lockfile, or a digest conflict."""


@dataclass(frozen=True)
class Rewrite:
    """One image reference changed for the site (for the plan and the audit trail)."""

    path: str
    before: str
    after: str


class LockIndex:
    """Locked images by repository path (the part the site registry keeps)."""

    def __init__(self, images: Iterable[LockedImage], unresolved: Iterable[str] = ()) -> None:
        self._by_path: dict[str, dict[str, str]] = {}
        for image in images:
            ref = parse_image(image.reference)
            self._by_path.setdefault(ref.path, {})[image.tag] = image.digest
        # platform.yaml references not locked yet (`plan` without a lockfile)
        for text in unresolved:
            ref = parse_image(text)
            if ref.tag is not None:
                self._by_path.setdefault(ref.path, {}).setdefault(ref.tag, UNRESOLVED_DIGEST)

    def digest(self, path: str, tag: str | None) -> str | None:
        """Digest of `path:tag`; without a tag, the only locked tag of `path` if unique."""
        tags = self._by_path.get(path, {})
        if tag is not None:
            return tags.get(tag)
        return next(iter(tags.values())) if len(tags) == 1 else None

    def tag(self, path: str) -> str | None:
        """The only locked tag of `path`, if there is exactly one."""
        tags = self._by_path.get(path, {})
        return next(iter(tags)) if len(tags) == 1 else None


@dataclass
class _Pinner:
    index: LockIndex
    hosts: frozenset[str]
    site: str
    rewrites: list[Rewrite]

    def resolve(self, where: str, text: str) -> tuple[ImageRef, str] | None:
        """(parsed reference, locked digest) for a reference at one of our hosts."""
        try:
            ref = parse_image(text)
        except ImageRefError:
            return None
        if ref.host not in self.hosts:
            return None
        tag = ref.tag or self.index.tag(ref.path)
        digest = self.index.digest(ref.path, tag)
        if digest is None:
            raise OverlayError(
                f"{where}: image {text} is not in the lockfile (lock it, or fix the overlay)"
            )
        if digest == UNRESOLVED_DIGEST and ref.digest is not None:
            digest = ref.digest  # the overlay's own pin: the lockfile will have to agree
        if ref.digest is not None and ref.digest != digest:
            raise OverlayError(
                f"{where}: image {text} pins {ref.digest} but the lockfile has {digest}: "
                "the overlay is stale"
            )
        return ImageRef(ref.host, ref.path, tag, ref.digest), digest

    def record(self, where: str, before: str, after: str) -> None:
        self.rewrites.append(Rewrite(where, before, after))

    def pin_tag(self, tag: str | None, digest: str) -> str:
        # `tag@digest` in a tag field renders as `repo:tag@digest`, which every runtime
        # resolves by digest while people still read the version.
        return f"{tag}@{digest}" if tag else digest

    def node(self, tree: dict[str, Any], where: str) -> set[str]:
        """Rewrite the image spelled by this mapping's fields; return the keys handled."""
        repository = tree.get("repository")
        image = tree.get("image")
        registry = tree.get("registry")
        raw_tag = tree.get("tag")
        tag = str(raw_tag) if isinstance(raw_tag, str | int | float) and raw_tag != "" else None
        version = tree.get("version")
        if isinstance(repository, str) and isinstance(image, str) and "tag" not in tree:
            # NVIDIA operators: {repository: host/prefix, image: name, version: tag}
            text = f"{repository.rstrip('/')}/{image}" + (f":{version}" if version else "")
            found = self.resolve(where, text)
            if found is None:
                return set()
            ref, digest = found
            prefix, _, name = ref.path.rpartition("/")
            before = text
            tree["repository"] = f"{self.site}/{prefix}" if prefix else self.site
            tree["image"] = name
            tree["version"] = self.pin_tag(ref.tag, digest)
            self.record(where, before, f"{tree['repository']}/{name}:{tree['version']}")
            return {"repository", "image", "version"}
        field = "repository" if isinstance(repository, str) else None
        if field is None and isinstance(image, str) and "tag" in tree:
            field = "image"
        if field is None or not ("tag" in tree or "digest" in tree or "registry" in tree):
            return set()
        name = str(tree[field])
        if isinstance(registry, str) and registry:
            name = f"{registry.rstrip('/')}/{name.lstrip('/')}"
        tag_part, _, tag_digest = (tag or "").partition("@")
        text = (
            name + (f":{tag_part}" if tag_part else "") + (f"@{tag_digest}" if tag_digest else "")
        )
        if isinstance(tree.get("digest"), str) and tree["digest"]:
            text += "" if tag_digest else f"@{tree['digest']}"
        found = self.resolve(where, text)
        if found is None:
            return set()
        ref, digest = found
        if isinstance(registry, str) and registry:
            tree["registry"] = self.site
            tree[field] = ref.path
            site_name = f"{self.site}/{ref.path}"
        else:
            tree[field] = site_name = f"{self.site}/{ref.path}"
        if "digest" in tree:
            # The chart has a digest field of its own: use it, keep the tag readable.
            tree["digest"] = digest
            if ref.tag:
                tree["tag"] = ref.tag
            after = f"{site_name}:{ref.tag}@{digest}" if ref.tag else f"{site_name}@{digest}"
        else:
            tree["tag"] = self.pin_tag(ref.tag, digest)
            after = f"{site_name}:{tree['tag']}"
        self.record(where, text, after)
        return {field, "registry", "tag", "digest"}

    def walk(self, tree: Any, where: str) -> Any:
        if isinstance(tree, list):
            return [self.walk(item, f"{where}[{i}]") for i, item in enumerate(tree)]
        if not isinstance(tree, dict):
            return tree
        handled = self.node(tree, where)
        for key, value in list(tree.items()):
            if key in handled:
                continue
            child = f"{where}.{key}" if where else str(key)
            if key in _IMAGE_STRING_KEYS and isinstance(value, str):
                found = self.resolve(child, value)
                if found is not None:
                    ref, digest = found
                    pinned = str(ImageRef(self.site, ref.path, ref.tag, digest))
                    tree[key] = pinned
                    self.record(child, value, pinned)
                continue
            tree[key] = self.walk(value, child)
        return tree


def pin_images(
    values: dict[str, Any],
    images: Iterable[LockedImage],
    overlay_host: str,
    site: str,
    unresolved: Iterable[str] = (),
) -> tuple[dict[str, Any], list[Rewrite]]:
    """A copy of `values` with every image of ours at `site`, pinned to its locked digest.

    Images at `overlay_host` (platform.yaml's `registry.host`) or already at `site` are
    rewritten; references to other registries are left alone (`validate` reports those).
    `unresolved` references (platform.yaml's, before `lock`) get `UNRESOLVED_DIGEST`.
    """
    index = LockIndex(images, unresolved)
    pinner = _Pinner(index, frozenset({overlay_host, site}), site, [])
    out = pinner.walk(copy.deepcopy(values), "")
    return out, pinner.rewrites
