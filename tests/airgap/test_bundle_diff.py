"""`diff` (differential bundles), `prune` (keep the last N releases) against real registries."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_world import LocalRegistry, World

from llmflow_airgap.bundle import BLOBS_DIR, IMAGES_DIR, MANIFEST_NAME, BundleManifest
from llmflow_airgap.cli import main
from llmflow_airgap.diff import DiffRequest, diff_bundle
from llmflow_airgap.errors import BundleError, RegistryError
from llmflow_airgap.lockfile import dump_lockfile, load_lockfile
from llmflow_airgap.prune import prune_registry
from llmflow_airgap.push import push_bundle
from llmflow_airgap.registry import RegistryClient
from llmflow_airgap.verify import verify_bundle


def _registry(root: Path, delete: bool = False) -> LocalRegistry:
    extra: dict[str, object] = {}
    if delete:
        extra["storage"] = {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        }
    return LocalRegistry(root, extra_config=extra).start()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalRegistry]:
    registry = _registry(tmp_path / "site", delete=True)
    try:
        yield registry
    finally:
        registry.stop()


def _only_image(bundle: Path, target: Path, reference: str) -> Path:
    """A copy of the bundle whose layout names one image (to fill a site partially)."""
    shutil.copytree(bundle, target, copy_function=os.link)
    index_path = target / IMAGES_DIR / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == reference
    ]
    index_path.unlink()  # a hard link: do not write through to the original
    index_path.write_text(json.dumps(index))
    return target


def _old_lock(lockfile: Path, target: Path, keep_repository: str) -> Path:
    lock = load_lockfile(lockfile)
    old = lock.model_copy(
        update={"images": [i for i in lock.images if i.repository == keep_repository]}
    )
    dump_lockfile(old, target)
    return target


def test_differential_bundle_against_a_previous_bundle_verifies(
    oci_world: World, built_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "diff"
    args = ["diff", str(built_bundle), "-o", str(out), "--key", str(oci_world.private_key)]
    assert main([*args, "--against-bundle", str(built_bundle), "--json"]) == 0
    done = [json.loads(x) for x in capsys.readouterr().out.splitlines()][-1]
    assert done["omitted"] == 10 and done["keptBlobBytes"] == 0
    manifest = BundleManifest.parse((out / MANIFEST_NAME).read_bytes())
    assert manifest.differential is not None
    assert set(manifest.omitted_blobs()) >= {oci_world.big_layer, oci_world.shared_layer}
    assert not (out / BLOBS_DIR / oci_world.big_layer.removeprefix("sha256:")).exists()
    assert (out / "charts").is_dir() and (out / "platform.lock.yaml").is_file()
    assert main(["verify", str(out), "--public-key", str(oci_world.public_key)]) == 0
    # putting an omitted blob back is an extra file; the full bundle is untouched
    shutil.copy(
        built_bundle / BLOBS_DIR / oci_world.big_layer.removeprefix("sha256:"),
        out / BLOBS_DIR / oci_world.big_layer.removeprefix("sha256:"),
    )
    report = verify_bundle(out, oci_world.public_key)
    assert [p.kind for p in report.problems] == ["extra"]
    assert verify_bundle(built_bundle, oci_world.public_key).ok


def test_differential_push_mounts_what_the_site_has_and_uploads_the_rest(
    oci_world: World, built_bundle: Path, lockfile: Path, site: LocalRegistry, tmp_path: Path
) -> None:
    # the site runs the previous release: the web image only
    web = _only_image(built_bundle, tmp_path / "web-only", "docker.io/llmflowtest/web:1.0")
    push_bundle(web, site.host)
    old = _old_lock(lockfile, tmp_path / "old.lock.yaml", "docker.io/llmflowtest/web")
    out = tmp_path / "diff"
    result = diff_bundle(DiffRequest(built_bundle, out, oci_world.private_key, against_lock=old))
    assert oci_world.shared_layer in result.omitted  # base layer shared with web
    assert oci_world.big_layer not in result.omitted  # only the worker has it
    assert verify_bundle(out, oci_world.public_key).ok
    pushed = push_bundle(out, site.host)
    assert pushed.blobs_mounted >= 1  # the shared base layer, from llmflowtest/web
    assert pushed.blobs_uploaded >= 1  # the worker's own layers
    lock = load_lockfile(lockfile)
    with RegistryClient({site.host: site.url}) as client:
        for image in lock.images:
            repo = image.repository.split("/", 1)[1]
            assert client.manifest_exists(site.host, repo, image.digest), image.reference
            for platform in image.platforms:
                assert client.manifest_exists(site.host, repo, platform.digest)


def test_differential_push_to_a_site_that_lacks_blobs_fails_loudly(
    oci_world: World, built_bundle: Path, site: LocalRegistry, tmp_path: Path
) -> None:
    push_bundle(built_bundle, site.host)
    out = tmp_path / "diff"
    args = ["diff", str(built_bundle), "-o", str(out), "--key", str(oci_world.private_key)]
    assert main([*args, "--registry", site.host, "--public-key", str(oci_world.public_key)]) == 0
    assert len(BundleManifest.parse((out / MANIFEST_NAME).read_bytes()).omitted_blobs()) == 10
    again = push_bundle(out, site.host)
    assert again.blobs_uploaded == 0 and again.blobs_existing > 0
    empty = _registry(tmp_path / "empty")
    try:
        with pytest.raises(BundleError, match=r"lacks blob .* use a full bundle"):
            push_bundle(out, empty.host)
    finally:
        empty.stop()


def test_prune_keeps_the_last_releases_and_deletes_the_rest(
    built_bundle: Path,
    lockfile: Path,
    site: LocalRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    push_bundle(built_bundle, site.host)
    lock = load_lockfile(lockfile)
    worker = next(i for i in lock.images if i.repository.endswith("/worker"))
    newest = lock.model_copy(update={"images": [i for i in lock.images if i is not worker]})
    newest_path = tmp_path / "newest.lock.yaml"
    dump_lockfile(newest, newest_path)

    dry = prune_registry(site.host, [newest, lock], keep=1)
    assert not dry.applied
    assert any("/llmflowtest/worker:1.0@" in d for d in dry.deleted)
    assert len(dry.deleted) == 1 + len(worker.platforms)
    assert prune_registry(site.host, [newest, lock], keep=2).deleted == []
    with RegistryClient({site.host: site.url}) as client:
        assert client.manifest_exists(site.host, "llmflowtest/worker", worker.digest)

    args = ["prune", "--registry", site.host, "--keep", "1", "--apply", "--json"]
    assert main([*args, "--lock", str(newest_path), "--lock", str(lockfile)]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert events[-1]["deleted"] == 1 + len(worker.platforms)
    with RegistryClient({site.host: site.url}) as client:
        assert not client.manifest_exists(site.host, "llmflowtest/worker", worker.digest)
        for image in newest.images:
            repo = image.repository.split("/", 1)[1]
            assert client.manifest_exists(site.host, repo, image.digest)
            for platform in image.platforms:
                # web and worker share no platform manifest, so the kept ones all remain
                assert client.manifest_exists(site.host, repo, platform.digest)


def test_prune_on_a_registry_without_delete_says_how_to_enable_it(
    built_bundle: Path, lockfile: Path, tmp_path: Path
) -> None:
    registry = _registry(tmp_path / "nodelete")
    try:
        push_bundle(built_bundle, registry.host)
        lock = load_lockfile(lockfile)
        newest = lock.model_copy(update={"images": lock.images[:1]})
        with pytest.raises(RegistryError, match=r"storage\.delete\.enabled"):
            prune_registry(registry.host, [newest, lock], keep=1, apply=True)
    finally:
        registry.stop()
