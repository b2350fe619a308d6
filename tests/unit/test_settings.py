from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmflow.settings import Profile, Settings


def test_embedded_defaults_need_no_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.profile is Profile.EMBEDDED
    assert s.database.embedded and s.object_store.backend == "filesystem"
    assert s.embedding.provider == "local"
    assert s.milvus_uri.endswith("milvus.db")


def test_env_nesting_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFLOW_EMBEDDING__BATCH_SIZE", "7")
    monkeypatch.setenv("LLMFLOW_RETRIEVAL__RRF_K", "10")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.embedding.batch_size == 7 and s.retrieval.rrf_k == 10


def test_cluster_profile_requires_dsn_and_milvus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFLOW_PROFILE", "cluster")
    with pytest.raises(ValidationError, match=r"database\.dsn"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("LLMFLOW_DATABASE__DSN", "postgresql://u:p@db:5432/llmflow")
    with pytest.raises(ValidationError, match=r"milvus\.uri"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("LLMFLOW_MILVUS__URI", "http://milvus:19530")
    monkeypatch.setenv("LLMFLOW_EMBEDDING__URL", "http://tei:80")
    with pytest.raises(ValidationError, match=r"policy\.opa_url"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("LLMFLOW_POLICY__OPA_URL", "http://opa:8181")
    with pytest.raises(ValidationError, match=r"graph\.neo4j_uri"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("LLMFLOW_GRAPH__NEO4J_URI", "bolt://neo4j:7687")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.policy.mode == "http" and s.graph.store == "neo4j"
    assert not s.database.embedded
    assert s.embedding.provider == "tei" and "multi" in s.embedding.languages
    assert s.object_store.backend == "s3"
    assert "p@db" not in repr(s)  # the DSN is a secret


def test_remote_embedder_needs_url() -> None:
    with pytest.raises(ValidationError, match=r"embedding\.url"):
        Settings(embedding={"provider": "openai"}, _env_file=None)  # type: ignore[call-arg]
