"""Shared fixtures: one embedded platform (real PostgreSQL, Milvus Lite, local embedding model,
Kiwi, Presidio) per test session, in a temporary data directory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
SAMPLES = REPO / "platform" / "samples"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present")
    return DATASETS


@pytest.fixture(scope="session")
def platform_settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from llmflow.settings import Settings

    data_dir = tmp_path_factory.mktemp("llmflow")
    return Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
async def runtime(platform_settings) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    from llmflow.runtime import Runtime

    rt = await Runtime.open(platform_settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP (a test double replaying the S3 API)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
