"""The rerankers against replays of TEI's and Infinity's documented ``/rerank`` contracts.

TEI (``router/src/http/server.rs``, ``rerank``): ``{"query", "texts", "raw_scores",
"truncate"}`` → ``[{"index", "score"}]`` sorted by score, descending; the sigmoid applied
unless ``raw_scores``; a batch over ``--max-client-batch-size`` refused with error_type
Validation (413 before v1.9, 422 since); an embedding model answers 424 "model is not a
re-ranker model". Infinity (``fastapi_schemas/pymodels.py``, ``RerankInput`` and
``ReRankResult``): ``{"query", "documents", "return_documents", "raw_scores", "model",
"top_n"}`` → ``{"object": "rerank", "results": [{"relevance_score", "index"}], "model",
"usage", "id", "created"}`` sorted by relevance, errors as ``{"error": {"message", ...}}``.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from llmflow.models.rerank import (
    IdentityReranker,
    InfinityReranker,
    RerankProtocolError,
    RerankRejected,
    RerankUnavailable,
    TEIReranker,
    build_reranker,
)
from llmflow.settings import RerankSettings

QUERY = "연차 휴가 신청 방법"


def logit(query: str, text: str) -> float:
    """A cross-encoder stand-in: shared words raise the score, length lowers it a little."""
    shared = len(set(query.split()) & set(text.split()))
    return 3.0 * shared - 2.0 - 0.01 * len(text)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


CANDIDATES = [
    "연차 휴가 는 인사 시스템 에서 신청 합니다",
    "법인 카드 사용 규정",
    "휴가 규정 은 팀장 승인 후 진행",
    "주차장 이용 안내",
] + [f"무관한 문서 {i}" for i in range(46)]


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class FakeTEIRerank:
    def __init__(
        self, *, version: str = "1.9.0", max_client_batch_size: int = 32, reranker: bool = True
    ) -> None:
        self.version, self.max_batch, self.reranker = version, max_client_batch_size, reranker
        self.bodies: list[dict[str, Any]] = []
        self.busy = 0

    def error(self, status: int, error_type: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": message, "error_type": error_type})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/rerank"
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.busy:
            self.busy -= 1
            return self.error(429, "Overloaded", "Model is overloaded")
        if not body["texts"]:
            return self.error(400, "Empty", "`texts` cannot be empty")
        if not self.reranker:
            return self.error(424, "Backend", "Backend error: model is not a re-ranker model")
        n = len(body["texts"])
        if n > self.max_batch:
            status = 413 if self.version.startswith("1.8") else 422
            message = f"batch size {n} > maximum allowed batch size {self.max_batch}"
            return self.error(status, "Validation", message)
        ranks = []
        for index, text in enumerate(body["texts"]):
            raw = logit(body["query"], text)
            ranks.append({"index": index, "score": raw if body["raw_scores"] else sigmoid(raw)})
        ranks.sort(key=lambda r: r["score"], reverse=True)
        return httpx.Response(200, json=ranks)


def tei(server: FakeTEIRerank, sleeps: Sleeps | None = None) -> TEIReranker:
    settings = RerankSettings(provider="tei", url="http://tei-rerank:8080", timeout_s=5.0)
    sleep = Sleeps() if sleeps is None else sleeps
    transport = httpx.MockTransport(server)
    reranker = build_reranker(settings, transport=transport, sleep=sleep, rng=random.Random(1))
    assert isinstance(reranker, TEIReranker)
    return reranker


def expected(texts: list[str]) -> list[float]:
    return [sigmoid(logit(QUERY, t)) for t in texts]


async def test_tei_scores_come_back_in_input_order_although_the_server_sorts_them() -> None:
    server = FakeTEIRerank()
    async with tei(server) as reranker:
        scores = await reranker.rerank(QUERY, CANDIDATES[:4])
    assert scores == pytest.approx(expected(CANDIDATES[:4]))
    assert max(range(4), key=scores.__getitem__) == 0 and all(0 < s < 1 for s in scores)
    assert server.bodies[0] == {
        "query": QUERY, "texts": CANDIDATES[:4], "raw_scores": False, "truncate": True
    }  # fmt: skip


@pytest.mark.parametrize("version", ["1.8.1", "1.9.2"])
async def test_tei_fifty_candidates_against_a_batch_limit_of_sixteen(version: str) -> None:
    server = FakeTEIRerank(version=version, max_client_batch_size=16)
    reranker = tei(server)
    scores = await reranker.rerank(QUERY, CANDIDATES)
    assert scores == pytest.approx(expected(CANDIDATES))
    assert [len(b["texts"]) for b in server.bodies] == [32, 16, 16, 16, 2]
    assert reranker.batch_size == 16


async def test_tei_embedding_model_behind_the_rerank_url_is_rejected_clearly() -> None:
    reranker = tei(FakeTEIRerank(reranker=False))
    with pytest.raises(RerankRejected, match="not a re-ranker model") as caught:
        await reranker.rerank(QUERY, CANDIDATES[:3])
    assert caught.value.status_code == 424


async def test_tei_overload_is_retried_briefly_then_reported_unavailable() -> None:
    server, sleeps = FakeTEIRerank(), Sleeps()
    server.busy = 1
    assert await tei(server, sleeps).rerank(QUERY, CANDIDATES[:2]) == pytest.approx(
        expected(CANDIDATES[:2])
    )
    assert len(sleeps) == 1 and 0.1 <= sleeps[0] <= 0.2
    server.busy, sleeps[:] = 10, []
    with pytest.raises(RerankUnavailable, match="overloaded after 3 attempts"):
        await tei(server, sleeps).rerank(QUERY, CANDIDATES[:2])
    assert len(sleeps) == 2


class FakeInfinity:
    def __init__(self, *, models: tuple[str, ...] = ("BAAI/bge-reranker-v2-m3",)) -> None:
        self.models = models
        self.bodies: list[dict[str, Any]] = []
        self.logits = False  # a server that ignores raw_scores=false and sends logits

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/rerank"
        body = json.loads(request.content)
        self.bodies.append(body)
        model = body.get("model", "default/not-specified")
        if model != "default/not-specified" and model not in self.models:
            message = (f"Invalid model: model=`{model}` not in "
                       f"{list(self.models)}")  # fmt: skip
            error = {"message": message, "type": None, "param": None, "code": 400}
            return httpx.Response(400, json={"error": error})
        raw = body.get("raw_scores", False) or self.logits
        scores = [logit(body["query"], d) for d in body["documents"]]
        results = [{"relevance_score": s if raw else sigmoid(s), "index": i}
                   for i, s in enumerate(scores)]  # fmt: skip
        results.sort(key=lambda r: r["relevance_score"], reverse=True)
        if body.get("top_n"):
            results = results[: body["top_n"]]
        usage = {"prompt_tokens": 42, "total_tokens": 42}
        return httpx.Response(200, json={"object": "rerank", "results": results,
                                         "model": self.models[0], "usage": usage,
                                         "id": "infinity-1", "created": 1})  # fmt: skip


def infinity(server: FakeInfinity, **kw: Any) -> InfinityReranker:
    settings = RerankSettings(provider="infinity", url="http://infinity:7997", **kw)
    reranker = build_reranker(settings, transport=httpx.MockTransport(server), sleep=Sleeps())
    assert isinstance(reranker, InfinityReranker)
    return reranker


async def test_infinity_aligns_results_asks_for_every_score_and_names_the_model() -> None:
    server = FakeInfinity()
    reranker = infinity(server, model="BAAI/bge-reranker-v2-m3", api_key=SecretStr("k"))
    assert await reranker.rerank(QUERY, CANDIDATES) == pytest.approx(expected(CANDIDATES))
    assert server.bodies == [{"query": QUERY, "documents": CANDIDATES, "return_documents": False,
                              "model": "BAAI/bge-reranker-v2-m3"}]  # fmt: skip


async def test_infinity_logits_are_squashed_keeping_their_order() -> None:
    server = FakeInfinity()
    server.logits = True
    scores = await infinity(server).rerank(QUERY, CANDIDATES[:4])
    assert scores == pytest.approx(expected(CANDIDATES[:4]))
    assert "model" not in server.bodies[0] and "top_n" not in server.bodies[0]


async def test_infinity_unknown_model_is_rejected_with_the_servers_message() -> None:
    with pytest.raises(RerankRejected, match="Invalid model") as caught:
        await infinity(FakeInfinity(), model="other").rerank(QUERY, ["a", "b"])
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "results",
    [[{"index": 0, "relevance_score": 0.5}],
     [{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.4}],
     [{"index": 0, "relevance_score": 0.5}, {"index": 5, "relevance_score": 0.4}],
     [{"index": 0, "relevance_score": 0.5}, {"index": 1, "relevance_score": None}]],
)  # fmt: skip
async def test_answers_that_break_the_contract_are_protocol_errors(results: Any) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"results": results}))
    reranker = InfinityReranker("http://x", transport=transport)
    with pytest.raises(RerankProtocolError):
        await reranker.rerank(QUERY, ["a", "b"])


async def test_provider_none_keeps_the_fused_order_without_any_request() -> None:
    reranker = build_reranker(RerankSettings())
    assert isinstance(reranker, IdentityReranker) and not reranker.enabled
    scores = await reranker.rerank(QUERY, CANDIDATES[:4])
    assert sorted(range(4), key=scores.__getitem__, reverse=True) == [0, 1, 2, 3]
    assert await reranker.rerank(QUERY, []) == []


async def test_empty_candidate_list_sends_nothing() -> None:
    server = FakeTEIRerank()
    assert await tei(server).rerank(QUERY, []) == []
    assert server.bodies == []


def test_server_providers_need_a_url() -> None:
    with pytest.raises(ValueError, match=r"rerank\.url"):
        build_reranker(RerankSettings(provider="tei"))
