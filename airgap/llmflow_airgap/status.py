"""`llmflow-airgap status`: what is installed at the site against what a bundle holds.

Three sources, each optional beyond the bundle: the install state file (which steps of which
bundle finished), a Helm driver (what the cluster reports for each release), and the site
registry (whether every image of the bundle is there, by digest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmflow_airgap.bundle import LOCK_NAME
from llmflow_airgap.digests import sha256_file
from llmflow_airgap.helm.base import HelmDriver
from llmflow_airgap.images import parse_image
from llmflow_airgap.install import STATE_NAME, InstallState
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.registry import RegistryClient, endpoint_url


@dataclass
class StatusReport:
    """The comparison, as lines for people and a document for CI."""

    lines: list[str] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)
    up_to_date: bool = True


def bundle_status(
    bundle: Path,
    work_dir: Path,
    registry: str | None = None,
    driver: HelmDriver | None = None,
) -> StatusReport:
    """Compare the bundle with the state file, the cluster (via `driver`) and the registry."""
    lock = load_lockfile(bundle / LOCK_NAME)
    lock_sha, _ = sha256_file(bundle / LOCK_NAME)
    report = StatusReport()
    state = InstallState.read(work_dir / STATE_NAME)
    charts = {c.component: f"{c.name}-{c.version}" for c in lock.charts}
    report.lines.append(
        f"Bundle {lock.platform.name} {lock.platform.version} (lock {lock_sha[:19]}): "
        f"{len(lock.images)} images, {len(lock.charts)} charts"
    )
    state_doc: dict[str, Any] = {"present": state is not None}
    releases: list[dict[str, Any]] = []
    if state is None:
        report.lines.append(f"Install state: none in {work_dir}")
        report.up_to_date = False
    else:
        same = state.get("lockSha256") == lock_sha
        complete = bool(state.get("completedAt"))
        report.up_to_date &= same and complete
        report.lines.append(
            f"Install state: {'this bundle' if same else 'ANOTHER bundle'} "
            f"({str(state.get('lockSha256', '?'))[:19]}), profile {state.get('profile')}, "
            + (f"completed {state['completedAt']}" if complete else "NOT complete")
        )
        state_doc.update(
            {"sameBundle": same, "complete": complete, "profile": state.get("profile")}
        )
        for step, entry in sorted((state.get("steps") or {}).items()):
            if not step.startswith("release/"):
                continue
            _, namespace, name = step.split("/", 2)
            row: dict[str, Any] = {
                "release": f"{namespace}/{name}",
                "state": entry.get("status"),
                "installedChart": entry.get("chart"),
                "bundleChart": charts.get(name),
            }
            if driver is not None:
                info = driver.release(name, namespace)
                row["cluster"] = (
                    None
                    if info is None
                    else {"revision": info.revision, "status": info.status, "chart": info.chart}
                )
                if info is None or info.status != "deployed":
                    report.up_to_date = False
            if row["installedChart"] and row["bundleChart"] != row["installedChart"]:
                report.up_to_date = False
            releases.append(row)
            cluster = row.get("cluster")
            seen = (
                ""
                if driver is None
                else (
                    ", cluster: absent"
                    if cluster is None
                    else f", cluster: rev {cluster['revision']} {cluster['status']}"
                )
            )
            report.lines.append(
                f"  release {row['release']}: {row['installedChart']} installed, bundle has "
                f"{row['bundleChart']}{seen}"
            )
    images: list[dict[str, Any]] = []
    if registry is not None:
        host = registry.split("://", 1)[-1].rstrip("/")
        with RegistryClient({host: endpoint_url(registry)}) as client:
            for image in lock.images:
                repo = parse_image(image.reference).path
                present = client.manifest_exists(host, repo, image.digest)
                report.up_to_date &= present
                images.append(
                    {"reference": image.reference, "digest": image.digest, "present": present}
                )
                mark = "present" if present else "MISSING"
                report.lines.append(
                    f"  image {host}/{repo}:{image.tag}@{image.digest[:19]}: {mark}"
                )
        missing = sum(not i["present"] for i in images)
        report.lines.append(
            f"Registry {host}: {len(images) - missing}/{len(images)} images present"
        )
    report.lines.append("Up to date." if report.up_to_date else "NOT up to date.")
    report.document = {
        "lockSha256": lock_sha,
        "state": state_doc,
        "releases": releases,
        "images": images,
        "upToDate": report.up_to_date,
    }
    return report
