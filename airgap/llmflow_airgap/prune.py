"""`llmflow-airgap prune`: remove images of old releases from the site registry.

Every completed install keeps its lockfile under `<work-dir>/history/`. `prune --keep N`
keeps every image manifest (index and per-platform manifests), chart and model artifact that
one of the N newest lockfiles references, and deletes the other tagged manifests — but only
in the repositories some LLMFlow lockfile ever used, so nothing else on a shared registry is
touched. It is a dry run unless `--apply` is given.

Model artifacts (`build --model-artifacts`, pushed as `models/<served-name>:<revision>`) are
not listed in the lockfile as images, but they are a pure function of it
(`modelartifact.model_artifact`): the manifest digest a kept release pushed is recomputed from
its locked model, so an old revision's artifact is recognised and removed like an old image.

Deletion goes through the distribution API (`DELETE /v2/<repo>/manifests/<digest>`); the
registry must allow it (docker-registry: `storage.delete.enabled: true`), and its garbage
collector reclaims the blob space afterwards (`registry garbage-collect <config>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmflow_airgap.chart_push import CHARTS_REPOSITORY_PREFIX
from llmflow_airgap.events import Reporter
from llmflow_airgap.images import parse_image
from llmflow_airgap.lockfile import Lockfile
from llmflow_airgap.modelartifact import model_artifact, repository_name
from llmflow_airgap.registry import RegistryClient, endpoint_url


@dataclass
class PruneResult:
    """Manifests kept and deleted (or, in a dry run, that would be deleted)."""

    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    applied: bool = False


def _kept_digests(locks: list[Lockfile]) -> set[str]:
    keep: set[str] = set()
    for lock in locks:
        for image in lock.images:
            keep.add(image.digest)
            keep.update(p.digest for p in image.platforms)
    return keep


def prune_registry(
    registry: str,
    history: list[Lockfile],
    keep: int,
    *,
    apply: bool = False,
    reporter: Reporter | None = None,
) -> PruneResult:
    """Delete manifests in our repositories not referenced by the `keep` newest lockfiles.

    `history` is newest first.
    """
    report = reporter or Reporter(quiet=True)
    if keep < 1:
        raise ValueError("keep at least one release")
    kept_locks = history[:keep]
    keep_digests = _kept_digests(kept_locks)
    keep_charts = {
        (c.name, c.version.replace("+", "_")) for lock in kept_locks for c in lock.charts
    }
    image_repos = sorted({parse_image(i.reference).path for lock in history for i in lock.images})
    chart_names = sorted({c.name for lock in history for c in lock.charts})
    model_repos = sorted({repository_name(m.name) for lock in history for m in lock.models})
    keep_models = {model_artifact(m).digest for lock in kept_locks for m in lock.models}
    host = registry.split("://", 1)[-1].rstrip("/")
    result = PruneResult(applied=apply)
    with RegistryClient({host: endpoint_url(registry)}) as client:
        doomed: list[tuple[str, str, str]] = []
        for repo in image_repos:
            for tag in client.tags(host, repo):
                digest = client.manifest_digest(host, repo, tag)
                if digest is None:
                    continue
                label = f"{host}/{repo}:{tag}@{digest}"
                if digest in keep_digests:
                    result.kept.append(label)
                    continue
                doomed.append((repo, digest, label))
                manifest = client.get_manifest(host, repo, digest)
                if manifest.is_index:
                    for child in manifest.json().get("manifests", []):
                        if child["digest"] not in keep_digests:
                            doomed.append(
                                (repo, child["digest"], f"{host}/{repo}@{child['digest']}")
                            )
        for name in chart_names:
            repo = f"{CHARTS_REPOSITORY_PREFIX}/{name}"
            for tag in client.tags(host, repo):
                digest = client.manifest_digest(host, repo, tag)
                if digest is None:
                    continue
                label = f"{host}/{repo}:{tag}@{digest}"
                if (name, tag) in keep_charts:
                    result.kept.append(label)
                else:
                    doomed.append((repo, digest, label))
        for repo in model_repos:
            for tag in client.tags(host, repo):
                digest = client.manifest_digest(host, repo, tag)
                if digest is None:
                    continue
                label = f"{host}/{repo}:{tag}@{digest}"
                if digest in keep_models:
                    result.kept.append(label)
                else:
                    doomed.append((repo, digest, label))
        seen: set[tuple[str, str]] = set()
        for repo, digest, label in doomed:
            if (repo, digest) in seen:
                continue
            seen.add((repo, digest))
            if apply:
                client.delete_manifest(host, repo, digest)
            result.deleted.append(label)
            verb = "deleted" if apply else "would delete"
            report.event("prune.manifest", f"{verb} {label}", manifest=label, applied=apply)
    verb = "deleted" if apply else "would delete (dry run; --apply to delete)"
    report.event(
        "prune.done",
        f"kept {len(result.kept)} tagged manifest(s) of the {len(kept_locks)} newest release(s); "
        f"{verb} {len(result.deleted)}",
        kept=len(result.kept),
        deleted=len(result.deleted),
        applied=apply,
    )
    return result
