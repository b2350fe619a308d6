"""Fixtures for the distribution checks: the repository, the chart reference copies, and a
disposable copy of the distribution files that negative tests can break on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
