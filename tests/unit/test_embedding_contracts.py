"""The HTTP embedders against replays of the servers' documented contracts.

``FakeTEI`` replays text-embeddings-inference as written in ``router/src/http/server.rs`` and
``router/src/lib.rs``: ``/info``, ``{"error", "error_type"}`` bodies with serde's variant
names, the status per error type (Validation: 413 before v1.9, 422 since, PR #818), its
messages, and axum's plain-text 413 over ``--payload-limit``. ``FakeOpenAI``: the OpenAI
embeddings API (``data`` placed by ``index``), OpenAI's and vLLM's error bodies."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from llmflow.models.embedding import (
    EmbeddingNotReady,
    EmbeddingProtocolError,
    EmbeddingRejected,
    EmbeddingUnavailable,
    OpenAIEmbedder,
    TEIEmbedder,
    build_embedder,
)
from llmflow.settings import EmbeddingSettings

DIM = 8


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:  # asyncio.sleep that only remembers
        self.append(seconds)


def vector_for(text: str, scale: float = 1.0) -> list[float]:
    raw = [b - 127.5 for b in hashlib.sha256(text.encode()).digest()[:DIM]]
    norm = math.sqrt(sum(x * x for x in raw))
    return [scale * x / norm for x in raw]


class FakeTEI:
    """TEI's HTTP contract; ``failures`` are answered, in order, before normal service."""

    def __init__(self, *, version: str = "1.9.0", max_client_batch_size: int = 32,
                 max_input_length: int = 512, payload_limit: int = 2_000_000,
                 has_info: bool = True, failures: list[Any] | None = None) -> None:  # fmt: skip
        self.version, self.max_batch = version, max_client_batch_size
        self.max_input_length, self.payload_limit = max_input_length, payload_limit
        self.has_info, self.failures = has_info, list(failures or [])
        self.requests: list[httpx.Request] = []
        self.embed_sizes: list[int] = []  # inputs per /embed request that passed axum

    def error(self, error_type: str, message: str) -> httpx.Response:
        validation = 413 if tuple(map(int, self.version.split(".")[:2])) < (1, 9) else 422
        status = {"Unhealthy": 503, "Backend": 424, "Overloaded": 429, "Tokenizer": 422,
                  "Validation": validation, "Empty": 400}[error_type]  # fmt: skip
        return httpx.Response(status, json={"error": message, "error_type": error_type})

    def info(self) -> dict[str, Any]:
        return {
            "model_id": "BAAI/bge-m3", "model_sha": None, "model_dtype": "float16",
            "model_type": {"embedding": {"pooling": "cls"}}, "max_concurrent_requests": 512,
            "max_input_length": self.max_input_length, "max_batch_tokens": 16384,
            "max_batch_requests": None, "max_client_batch_size": self.max_batch,
            "auto_truncate": False, "tokenization_workers": 2, "version": self.version,
            "sha": None, "docker_label": None,
        }  # fmt: skip

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(request.content) > self.payload_limit:
            axum = "Failed to buffer the request body: length limit exceeded"
            return httpx.Response(413, text=axum)
        if request.url.path == "/info" and request.method == "GET":
            return httpx.Response(200, json=self.info()) if self.has_info else httpx.Response(404)
        if request.url.path != "/embed":
            return httpx.Response(404)
        body = json.loads(request.content)
        inputs = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
        self.embed_sizes.append(len(inputs))
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return self.error(*failure)
        if not inputs:
            return self.error("Empty", "`inputs` cannot be empty")
        if len(inputs) > self.max_batch:
            msg = f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch}"
            return self.error("Validation", msg)
        for tokens in (len(text.split()) + 2 for text in inputs):  # auto_truncate is false
            if tokens > self.max_input_length and not body.get("truncate", False):
                msg = f"must have less than {self.max_input_length} tokens. Given: {tokens}"
                return self.error("Validation", f"Input validation error: `inputs` {msg}")
        return httpx.Response(200, json=[vector_for(t) for t in inputs])


def tei(server: FakeTEI, sleeps: Sleeps | None = None, **kw: Any) -> TEIEmbedder:
    settings = EmbeddingSettings(provider="tei", url="http://tei:8080", model="BAAI/bge-m3", **kw)
    embedder = build_embedder(settings, transport=httpx.MockTransport(server), rng=random.Random(7),
                              sleep=Sleeps() if sleeps is None else sleeps)  # fmt: skip
    assert isinstance(embedder, TEIEmbedder)
    return embedder


TEXTS = [f"문서 {i} 의 내용 입니다 chunk {i}" for i in range(70)]


async def test_tei_reads_info_once_and_caps_batches_at_max_client_batch_size() -> None:
    server = FakeTEI(max_client_batch_size=32, max_input_length=8192)
    async with tei(server, batch_size=64, timeout_s=45.0) as embedder:
        assert await embedder.embed_documents(TEXTS) == [vector_for(t) for t in TEXTS]
        await embedder.embed_query("질문")
        assert embedder.max_tokens == 8192 and embedder.dimension == DIM
    assert [r.url.path for r in server.requests].count("/info") == 1
    assert server.embed_sizes == [32, 32, 6, 1]
    embed = server.requests[1]
    assert json.loads(embed.content) == {"inputs": TEXTS[:32], "truncate": True, "normalize": True}
    assert (
        embed.extensions["timeout"]["read"]
        == 45.0
        >= 10.0
        >= embed.extensions["timeout"]["connect"]
    )


@pytest.mark.parametrize("version", ["1.8.1", "1.9.2"])  # refuses with 413, with 422
async def test_tei_batch_size_refusal_halves_the_batch_and_is_remembered(version: str) -> None:
    # A gateway that does not route /info: the limit is only learnt from refusals.
    embedder = tei(server := FakeTEI(version=version, max_client_batch_size=8, has_info=False))
    assert await embedder.embed_documents(TEXTS[:20]) == [vector_for(t) for t in TEXTS[:20]]
    assert server.embed_sizes == [20, 10, 5, 5, 5, 5]
    assert embedder.batch_size == 5
    server.embed_sizes.clear()
    await embedder.embed_documents(TEXTS[:10])
    assert server.embed_sizes == [5, 5]


async def test_tei_inputs_beyond_max_input_length_are_truncated_not_refused() -> None:
    server = FakeTEI(max_input_length=512)
    long_text = " ".join(["토큰"] * 600)
    assert await tei(server).embed_query(long_text) == vector_for(long_text)


async def test_tei_payload_limit_413_plain_text_shrinks_then_rejects_a_lone_giant() -> None:
    embedder = tei(server := FakeTEI(payload_limit=3_000), batch_size=16)
    long_texts = [f"{i} " + "가" * 300 for i in range(8)]  # ~900 bytes each in UTF-8 JSON
    assert await embedder.embed_documents(long_texts) == [vector_for(t) for t in long_texts]
    assert server.embed_sizes == [2, 2, 2, 2]  # 8 refused by axum, 4 refused, then pairs
    with pytest.raises(EmbeddingRejected, match="length limit exceeded") as caught:
        await embedder.embed_documents(["나" * 2_000])
    assert caught.value.status_code == 413


@pytest.mark.parametrize(
    "failure",
    [("Overloaded", "Model is overloaded"), ("Unhealthy", "unhealthy"),
     httpx.ConnectError("Connection refused"), httpx.ReadTimeout("timed out")],
)  # fmt: skip
async def test_tei_transient_failures_are_retried_with_jittered_backoff(failure: Any) -> None:
    embedder = tei(FakeTEI(failures=[failure, failure]), sleeps := Sleeps())
    assert await embedder.embed_documents(TEXTS[:3]) == [vector_for(t) for t in TEXTS[:3]]
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


async def test_tei_overloaded_beyond_max_retries_raises_unavailable() -> None:
    server, sleeps = FakeTEI(failures=[("Overloaded", "Model is overloaded")] * 10), Sleeps()
    embedder = tei(server, sleeps, max_retries=3)
    with pytest.raises(EmbeddingUnavailable, match="Model is overloaded after 4 attempts"):
        await embedder.embed_documents(TEXTS[:3])
    assert server.embed_sizes == [3, 3, 3, 3]
    assert len(sleeps) == 3
    for attempt, waited in enumerate(sleeps):  # equal jitter: between half and all of 0.5·2^k
        assert 0.5 * 2**attempt / 2 <= waited <= 0.5 * 2**attempt


async def test_tei_backend_error_is_rejected_without_retry() -> None:
    server, sleeps = FakeTEI(failures=[("Backend", "Inference failed")]), Sleeps()
    with pytest.raises(EmbeddingRejected, match="Inference failed") as caught:
        await tei(server, sleeps).embed_documents(TEXTS[:3])
    assert caught.value.status_code == 424 and caught.value.error_type == "Backend"
    assert sleeps == [] and server.embed_sizes == [3]


async def test_tei_dimension_is_known_after_warm_up_and_empty_input_costs_nothing() -> None:
    embedder = tei(server := FakeTEI())
    with pytest.raises(EmbeddingNotReady):
        _ = embedder.dimension
    assert await embedder.embed_documents([]) == [] and server.requests == []
    await embedder.warm_up()
    assert embedder.dimension == DIM


async def test_tei_answering_openai_shape_is_a_protocol_error() -> None:
    vllm = {"/info": httpx.Response(404), "/embed": httpx.Response(200, json={"data": []})}
    transport = httpx.MockTransport(lambda r: vllm[r.url.path])
    embedder = TEIEmbedder("http://x", model_name="m", transport=transport)
    with pytest.raises(EmbeddingProtocolError, match="provider 'openai'"):
        await embedder.embed_documents(["a"])


class FakeOpenAI:
    """OpenAI ``POST /v1/embeddings``: ``data`` shuffled, vectors not unit length."""

    def __init__(self, *, api_key: str | None = None, max_tokens: int = 512) -> None:
        self.api_key, self.max_tokens = api_key, max_tokens
        self.requests: list[httpx.Request] = []
        self.failures: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            return self.failures.pop(0)
        if request.url.path != "/v1/embeddings":
            return httpx.Response(404, json={"detail": "Not Found"})
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error",
                     "param": None, "code": "invalid_api_key"}  # fmt: skip
            return httpx.Response(401, json={"error": error})
        body = json.loads(request.content)
        for text in body["input"]:
            if len(text.split()) > self.max_tokens:  # vLLM's wording and body
                msg = (f"This model's maximum context length is {self.max_tokens} tokens. "
                       "However, you requested more tokens in the input.")  # fmt: skip
                error = {"object": "error", "message": msg, "type": "BadRequestError", "code": 400}
                return httpx.Response(400, json=error)
        data = [{"object": "embedding", "index": i, "embedding": vector_for(t, scale=3.0)}
                for i, t in enumerate(body["input"])]  # fmt: skip
        random.Random(len(self.requests)).shuffle(data)
        usage = {"prompt_tokens": 10, "total_tokens": 10}
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"],
                                         "usage": usage})  # fmt: skip


def openai(
    server: FakeOpenAI, url: str = "http://vllm:8000", sleeps: Sleeps | None = None, **kw: Any
) -> OpenAIEmbedder:
    settings = EmbeddingSettings(provider="openai", url=url, model="bge-m3", **kw)
    sleep = Sleeps() if sleeps is None else sleeps
    embedder = build_embedder(settings, transport=httpx.MockTransport(server), sleep=sleep)
    assert isinstance(embedder, OpenAIEmbedder)
    return embedder


async def test_openai_places_shuffled_data_by_index_and_normalises() -> None:
    server = FakeOpenAI(api_key="sk-test")
    embedder = openai(server, batch_size=4, api_key=SecretStr("sk-test"))
    vectors = await embedder.embed_documents(TEXTS[:10])
    for vector, text in zip(vectors, TEXTS[:10], strict=True):
        assert vector == pytest.approx(vector_for(text))  # unit length, same direction
    assert [len(json.loads(r.content)["input"]) for r in server.requests] == [4, 4, 2]
    first = json.loads(server.requests[0].content)
    assert first == {"model": "bge-m3", "input": TEXTS[:4], "encoding_format": "float"}


@pytest.mark.parametrize("url", ["http://vllm:8000", "http://vllm:8000/v1/"])
async def test_openai_without_key_sends_no_authorization(url: str) -> None:
    server = FakeOpenAI()
    await openai(server, url=url).embed_query("안녕하세요")
    assert server.requests[0].url.path == "/v1/embeddings"
    assert "authorization" not in server.requests[0].headers


async def test_openai_errors_carry_the_servers_message_and_are_not_retried() -> None:
    server = FakeOpenAI(api_key="right", max_tokens=5)
    with pytest.raises(EmbeddingRejected, match="Incorrect API key") as caught:
        await openai(server, api_key=SecretStr("wrong")).embed_query("q")
    assert caught.value.status_code == 401
    with pytest.raises(EmbeddingRejected, match="maximum context length is 5") as caught:
        await openai(server, api_key=SecretStr("right")).embed_query("one two three four five six")
    assert caught.value.error_type == "BadRequestError" and len(server.requests) == 2


async def test_openai_honours_retry_after_then_gives_up_as_unavailable() -> None:
    server, sleeps = FakeOpenAI(), Sleeps()
    server.failures = [httpx.Response(503, headers={"Retry-After": "7"}, text="busy")]
    embedder = openai(server, sleeps=sleeps, max_retries=2)
    assert await embedder.embed_query("q") == pytest.approx(vector_for("q"))
    assert sleeps == [7.0]
    server.failures = [httpx.Response(502, text="Bad Gateway") for _ in range(3)]
    with pytest.raises(EmbeddingUnavailable, match="502"):
        await embedder.embed_query("q")


@pytest.mark.parametrize(
    "data",
    [[{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}],
     [{"index": 0, "embedding": [1.0]}],
     [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": "AAAA"}]],
)  # fmt: skip
async def test_openai_answers_that_break_the_contract_are_protocol_errors(data: Any) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"data": data}))
    embedder = OpenAIEmbedder("http://x", model_name="m", transport=transport)
    with pytest.raises(EmbeddingProtocolError):
        await embedder.embed_documents(["a", "b"])
