"""`llmflow-airgap plan`: the install plan before there is a bundle.

The plan is *the* plan `install --dry-run` prints, built by the same code
(`install.build_plan`, rendered by `InstallPlan.lines` / `to_json`), so the two cannot drift:
preflight, chart pushes, the Namespace manifests server-side applied before the first release,
the cluster objects each release needs, every Helm release in dependency order with its values
files, pinned images and health gates, the other manifests after the last release, and the
post-install steps.

`build_plan` reads a bundle; what it reads from one is the lockfile (image digests, chart
archives) and the image layout (what `push-images` uploads). `plan` therefore builds the plan
over a *plan view*: a scratch directory holding a copy of the lockfile and an empty image
layout, and, when given, the Dify plugin public key the bundle would carry. The one section
that depends on bundle contents, the per-image blob counts of `push-images`, is replaced by
the lockfile's image list; everything else is printed exactly as `install --dry-run` prints it
for a bundle built from the same lockfile, with the bundle path shown as `<bundle>`.

Without a lockfile (a plain checkout, before `lock`) the plan is built by the same code with
nothing resolved (`PlanRequest.locked=False`): preflight, Namespaces, cluster objects,
releases in the same order with the same values files, gates, manifests and post-install
steps are exactly what a locked plan shows; where a digest would be, the image and chart lines
say it is resolved by `lock` (`overlay.UNRESOLVED_DIGEST`), and the image and chart sections
list platform.yaml's references. A `--lock` that names a missing file is still an error.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmflow_airgap.bundle import IMAGES_DIR, LOCK_NAME, OCI_LAYOUT_VERSION
from llmflow_airgap.chart_push import CHARTS_REPOSITORY_PREFIX
from llmflow_airgap.difyplugin_bundle import PUBLIC_KEY_NAME
from llmflow_airgap.errors import LockfileError
from llmflow_airgap.images import parse_image
from llmflow_airgap.install import InstallPlan, PlanRequest, build_plan
from llmflow_airgap.lockfile import Lockfile
from llmflow_airgap.platform import Platform, Profile, load_platform
from llmflow_airgap.registry import OCI_INDEX

BUNDLE_PLACEHOLDER = "<bundle>"
PUSH_IMAGES_TITLE = "Push images to "
PUSH_CHARTS_TITLE = "Push charts to "
UNLOCKED_HEADER = "(no lockfile: digests resolved by `lock`)"
UNLOCKED_LINE = "(digest resolved by `lock`)"


@dataclass(frozen=True)
class PlanInputs:
    """What `plan` needs: platform.yaml, its lockfile (None: plan before `lock`), and the
    install options."""

    platform_file: Path
    lock_file: Path | None
    profile: Profile
    registry: str | None = None
    work_dir: Path = Path(".llmflow-install")
    tenants: tuple[str, ...] = ()
    tenant_values: Path | None = None
    dify_plugin_public_key: Path | None = None
    min_free_bytes: int = 1024**3


@dataclass
class PlatformPlan:
    """The install plan of a lockfile, and the text and JSON `plan` prints."""

    plan: InstallPlan
    lock: Lockfile
    locked: bool
    text: list[str]
    document: dict[str, Any]


def default_lock_file(platform_file: Path) -> Path:
    """`platform.lock.yaml` beside `platform.yaml` (where `lock` writes it by default)."""
    return platform_file.with_name(LOCK_NAME)


def resolve_lock_file(platform_file: Path, given: Path | None) -> Path | None:
    """The lockfile `plan` reads: `--lock` when given (it must exist), else
    `platform.lock.yaml` beside platform.yaml when there is one, else None (unlocked)."""
    if given is not None:
        return given
    default = default_lock_file(platform_file)
    return default if default.is_file() else None


def _write_view(root: Path, inputs: PlanInputs) -> None:
    if inputs.lock_file is not None:
        shutil.copyfile(inputs.lock_file, root / LOCK_NAME)
    layout = root / IMAGES_DIR
    layout.mkdir()
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    )
    if inputs.dify_plugin_public_key is not None:
        target = root / PUBLIC_KEY_NAME
        target.parent.mkdir(parents=True)
        shutil.copyfile(inputs.dify_plugin_public_key, target)


def _image_lines(lock: Lockfile, registry: str) -> list[str]:
    lines = []
    for image in lock.images:
        target = parse_image(image.reference).mirrored(registry)
        lines.append(f"  {image.reference}@{image.digest} -> {target}")
    lines.append(
        f"  {len(lock.images)} images from the lockfile (blob counts and sizes are known once "
        "the bundle is built: `install --dry-run` shows them)"
    )
    return lines


def _unlocked_image_lines(platform: Platform, registry: str) -> list[str]:
    references = sorted({image for c in platform.components for image in c.images})
    lines = [
        f"  {reference} -> {parse_image(reference).mirrored(registry)} {UNLOCKED_LINE}"
        for reference in references
    ]
    lines.append(
        f"  {len(references)} images from platform.yaml (digests, blob counts and sizes are "
        "resolved by `lock` and `build`)"
    )
    return lines


def _unlocked_charts(platform: Platform) -> list[dict[str, str]]:
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for comp in platform.components:
        key = (comp.chart.name, comp.chart.version)
        tag = comp.chart.version.replace("+", "_")
        seen.setdefault(
            key,
            {
                "chart": f"{comp.chart.name}-{comp.chart.version}",
                "target": f"{CHARTS_REPOSITORY_PREFIX}/{comp.chart.name}:{tag}",
            },
        )
    return list(seen.values())


def replace_section(lines: list[str], title: str, replacement: list[str]) -> list[str]:
    """`lines` with the body of the section whose heading starts with `title` swapped for
    `replacement` (a section ends at the next empty line)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = lines.index("", start)
    return [*lines[: start + 1], *replacement, *lines[end:]]


def replace_push_images(lines: list[str], replacement: list[str]) -> list[str]:
    """`lines` with the body of the push-images section swapped for `replacement`."""
    return replace_section(lines, PUSH_IMAGES_TITLE, replacement)


def normalise_bundle_path(lines: list[str], bundle: Path) -> list[str]:
    """Every mention of the bundle directory as `<bundle>`."""
    return [line.replace(str(bundle), BUNDLE_PLACEHOLDER) for line in lines]


def build_platform_plan(inputs: PlanInputs) -> PlatformPlan:
    """The install plan for `inputs.profile`, from platform.yaml and its lockfile (or, with
    `lock_file=None`, from platform.yaml alone, digests left to `lock`)."""
    locked = inputs.lock_file is not None
    if inputs.lock_file is not None and not inputs.lock_file.is_file():
        raise LockfileError(
            f"no lockfile at {inputs.lock_file}: the plan pins every image by the digest the "
            "lockfile records; run `llmflow-airgap lock` first, or leave out --lock for a "
            "plan whose digests are still to be resolved"
        )
    platform = load_platform(inputs.platform_file)
    registry = inputs.registry or platform.registry.host
    with tempfile.TemporaryDirectory(prefix="llmflow-plan-") as scratch:
        view = Path(scratch)
        _write_view(view, inputs)
        plan = build_plan(
            PlanRequest(
                bundle=view,
                platform_file=inputs.platform_file,
                registry=registry,
                profile=inputs.profile,
                work_dir=inputs.work_dir,
                tenants=inputs.tenants,
                tenant_values=inputs.tenant_values,
                min_free_bytes=inputs.min_free_bytes,
                locked=locked,
            )
        )
        lock = plan.lock
        host = plan.registry_host
        text = plan.lines()
        if locked:
            text = replace_push_images(text, _image_lines(lock, host))
        else:
            text[0] = text[0].replace("(lock ), ", f"{UNLOCKED_HEADER}, ")
            text = replace_push_images(text, _unlocked_image_lines(platform, host))
            charts = _unlocked_charts(platform)
            text = replace_section(
                text,
                PUSH_CHARTS_TITLE,
                [f"  chart/{c['chart']} -> {c['target']} {UNLOCKED_LINE}" for c in charts],
            )
        text = normalise_bundle_path(text, view)
        document = json.loads(json.dumps(plan.to_json()).replace(str(view), BUNDLE_PLACEHOLDER))
    if locked:
        document["images"] = [
            {
                "source": image.reference,
                "digest": image.digest,
                "target": str(parse_image(image.reference).mirrored(host)),
            }
            for image in lock.images
        ]
    else:
        document["lockSha256"] = None
        document["images"] = [
            {"source": ref, "digest": None, "target": str(parse_image(ref).mirrored(host))}
            for ref in sorted({image for c in platform.components for image in c.images})
        ]
        document["charts"] = [
            {"chart": c["chart"], "target": c["target"], "bytes": None} for c in charts
        ]
    document["bundle"] = None
    return PlatformPlan(plan=plan, lock=lock, locked=locked, text=text, document=document)
