"""Fixtures for the distribution checks: the repository, the chart reference copies, a
disposable copy of the distribution files that negative tests can break on purpose, and a
real OCI registry with test content for the bundle commands (`oci_world`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_world import REGISTRY_BINARY, World, build_world

REPO = Path(__file__).resolve().parents[2]
CHARTS_REFERENCE = REPO.parent / "shared" / "charts-reference"
DISTRIBUTION_DIRS = ("platform", "helm-values", "policies")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def charts_dir() -> Path:
    if not CHARTS_REFERENCE.is_dir():
        pytest.skip(
            f"chart reference copies not found at {CHARTS_REFERENCE} "
            "(../shared/charts-reference is absent): key and values-schema checks cannot run"
        )
    return CHARTS_REFERENCE


@pytest.fixture(scope="session")
def distribution_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide copy of platform/, helm-values/ and policies/ to break on purpose."""
    root = tmp_path_factory.mktemp("distribution")
    for name in DISTRIBUTION_DIRS:
        shutil.copytree(
            REPO / name, root / name, ignore=shutil.ignore_patterns("samples", "__pycache__")
        )
    return root


@pytest.fixture(scope="session")
def oci_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A real `docker-registry` filled with test images and charts, plus model and wheel."""
    if not REGISTRY_BINARY.exists():
        pytest.skip(f"{REGISTRY_BINARY} is missing (apt install docker-registry): no OCI registry")
    world = build_world(tmp_path_factory.mktemp("oci-world"))
    try:
        yield world
    finally:
        world.chart_server.stop()
        world.registry.stop()


@pytest.fixture(scope="session")
def lockfile(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`llmflow-airgap lock` of the test platform, through the CLI."""
    from llmflow_airgap.cli import main

    out = tmp_path_factory.mktemp("lock") / "platform.lock.yaml"
    args = ["lock", "--platform", str(oci_world.platform_file), "-o", str(out)]
    assert main([*args, *oci_world.cli_sources()]) == 0
    return out


@pytest.fixture(scope="session")
def built_bundle(
    oci_world: World, lockfile: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`llmflow-airgap build` of that lock (split into 1 MiB parts beside it). Read-only:
    tests that tamper with a bundle copy it first."""
    from llmflow_airgap.cli import main

    out = tmp_path_factory.mktemp("built") / "bundle"
    args = ["build", "--lock", str(lockfile), "-o", str(out), "--key", str(oci_world.private_key)]
    parts = ["--split-size", "1M", "--parts-dir", str(out.parent / "parts")]
    assert main([*args, *parts, *oci_world.cli_sources()]) == 0
    return out
