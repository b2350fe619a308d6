"""`prune` removes old `models/<name>:<revision>` ModelPack artifacts (`build
--model-artifacts`) beyond the last N releases, like images, on a real site registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_world import LocalRegistry, World

from llmflow_airgap.cli import main
from llmflow_airgap.lockfile import Lockfile, dump_lockfile, load_lockfile
from llmflow_airgap.modelartifact import model_artifact
from llmflow_airgap.prune import prune_registry
from llmflow_airgap.push import push_bundle
from llmflow_airgap.registry import RegistryClient


@pytest.fixture(scope="module")
def artifact_bundle(
    oci_world: World, lockfile: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("prune-models") / "bundle"
    args = ["build", "--lock", str(lockfile), "-o", str(out), "--key", str(oci_world.private_key)]
    assert main([*args, "--model-artifacts", *oci_world.cli_sources()]) == 0
    return out


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalRegistry]:
    storage = {"filesystem": {"rootdirectory": str(tmp_path / "site/data")}}
    registry = LocalRegistry(
        tmp_path / "site", extra_config={"storage": {**storage, "delete": {"enabled": True}}}
    ).start()
    try:
        yield registry
    finally:
        registry.stop()


def _next_revision(lock: Lockfile) -> Lockfile:
    """The next release: same images and charts, the model at another revision."""
    (model,) = lock.models
    return lock.model_copy(update={"models": [model.model_copy(update={"revision": "f" * 40})]})


def test_prune_deletes_model_artifacts_of_old_releases_only(
    artifact_bundle: Path,
    lockfile: Path,
    site: LocalRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    push_bundle(artifact_bundle, site.host)
    lock = load_lockfile(lockfile)
    (model,) = lock.models
    old = model_artifact(model)
    with RegistryClient({site.host: site.url}) as client:
        assert client.manifest_digest(site.host, "models/tiny", model.revision) == old.digest

    newest = _next_revision(lock)
    dry = prune_registry(site.host, [newest, lock], keep=1)
    assert dry.deleted == [f"{site.host}/models/tiny:{model.revision}@{old.digest}"]
    # the same model revision in a kept release keeps its artifact; so does keeping both
    assert prune_registry(site.host, [lock, lock], keep=1).deleted == []
    assert prune_registry(site.host, [newest, lock], keep=2).deleted == []
    with RegistryClient({site.host: site.url}) as client:
        assert client.manifest_exists(site.host, "models/tiny", old.digest)  # dry run

    newest_path = tmp_path / "newest.lock.yaml"
    dump_lockfile(newest, newest_path)
    args = ["prune", "--registry", site.host, "--keep", "1", "--apply", "--json"]
    assert main([*args, "--lock", str(newest_path), "--lock", str(lockfile)]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["manifest"] for e in events if e["event"] == "prune.manifest"] == dry.deleted
    with RegistryClient({site.host: site.url}) as client:
        assert not client.manifest_exists(site.host, "models/tiny", old.digest)
        assert client.tags(site.host, "models/tiny") == []
        for image in lock.images:  # the images of the kept release are untouched
            repo = image.repository.split("/", 1)[1]
            assert client.manifest_exists(site.host, repo, image.digest), image.reference
