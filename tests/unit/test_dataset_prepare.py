"""Dataset preparation without a database: readers, column mapping, conversion to
LLaMA-Factory's alpaca / sharegpt contract, dedupe, the seeded split, the quality report and
the PII scrub (the real PII engine with the repository's policy)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmflow.training.datasets.errors import DatasetFormatError, DatasetTooLarge
from llmflow.training.datasets.examples import (
    Example,
    Turn,
    check_llamafactory_rows,
    dataset_info,
    from_record,
    normalize,
    to_alpaca,
    to_sharegpt,
)
from llmflow.training.datasets.prepare import (
    PiiScrub,
    build_files,
    deduplicate,
    quality_report,
    scrub,
    split,
)
from llmflow.training.datasets.readers import ColumnMapping, load_examples

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datasets" / "ko_en_instructions.jsonl"
BIG = 10**9


def load(data: bytes, name: str, mapping: ColumnMapping | None = None, **caps: int) -> Any:
    return load_examples(
        data,
        name,
        None,
        mapping or ColumnMapping(),
        max_bytes=caps.get("max_bytes", BIG),
        max_rows=caps.get("max_rows", BIG),
        max_field_chars=caps.get("max_field_chars", BIG),
    )


def qa(question: str, answer: str, ref: str = "") -> Example:
    return Example((Turn("user", question), Turn("assistant", answer)), ref=ref)


@pytest.fixture(scope="module")
def guard() -> Any:
    from llmflow.pii.anonymize import PiiGuard
    from llmflow.pii.config import default_config_path, load_config
    from llmflow.pii.engine import PiiEngine
    from llmflow.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return PiiGuard(PiiEngine(load_config(default_config_path(settings.policies_dir))), b"s")


# -- readers ----------------------------------------------------------------------------


def test_jsonl_fixture_rows_become_examples_or_rejections_with_reasons() -> None:
    rows = load(FIXTURE.read_bytes(), FIXTURE.name)
    assert rows.total == 24
    assert len(rows.examples) == 22
    reasons = {r.ref: r.reason for r in rows.rejected}
    assert reasons == {"row 13": "empty_output", "row 14": "wrong_type"}
    translated = rows.examples[2]
    assert translated.input == "회의는 오후 3시에 시작합니다."
    assert translated.prompt.endswith("\n회의는 오후 3시에 시작합니다.")


def test_csv_with_a_mapping_of_korean_columns_and_a_bom() -> None:
    data = "\ufeff질문,답변,비고\n휴가는 며칠인가요?,연 15일입니다.,x\n".encode()
    rows = load(data, "qa.csv", ColumnMapping.parse(["instruction=질문", "output=답변"]))
    assert [(e.prompt, e.response) for e in rows.examples] == [
        ("휴가는 며칠인가요?", "연 15일입니다.")
    ]
    # the well-known Korean names are found without a mapping as well
    assert len(load(data, "qa.csv").examples) == 1


def test_missing_columns_name_what_the_source_has() -> None:
    with pytest.raises(DatasetFormatError, match="it has: q, a"):
        load(b"q,a\nx,y\n", "qa.csv", ColumnMapping.parse(["instruction=question"]))
    with pytest.raises(DatasetFormatError, match="no instruction/output"):
        load(b"q,a\nx,y\n", "qa.csv")
    with pytest.raises(DatasetFormatError, match="FIELD=COLUMN"):
        ColumnMapping.parse(["answer"])


def test_corrupt_and_wrongly_encoded_files_fail_clearly() -> None:
    with pytest.raises(DatasetFormatError, match="line 2 is not valid JSON"):
        load(b'{"instruction": "a", "output": "b"}\n{"instruction": \n', "x.jsonl")
    with pytest.raises(DatasetFormatError, match="CP949"):
        load("질문,답변\n가,나\n".encode("cp949"), "x.csv")
    with pytest.raises(DatasetFormatError, match="not a readable Parquet"):
        load(b"PAR1 this is not parquet", "x.parquet")
    with pytest.raises(DatasetFormatError, match="expected a JSON array of objects"):
        load(b'"just a string"', "x.json")
    with pytest.raises(DatasetFormatError, match="extension"):
        load(b"a", "x.xlsx")


def test_caps_refuse_huge_sources_instead_of_truncating() -> None:
    data = FIXTURE.read_bytes()
    with pytest.raises(DatasetTooLarge, match="max_file_bytes"):
        load(data, FIXTURE.name, max_bytes=100)
    with pytest.raises(DatasetTooLarge, match="max_rows"):
        load(data, FIXTURE.name, max_rows=10)
    rows = load(data, FIXTURE.name, max_field_chars=40)
    assert any(r.reason == "field_too_long" for r in rows.rejected)


def test_parquet_messages_column_and_wrong_types() -> None:
    table = pa.table(
        {
            "messages": [
                [
                    {"role": "user", "content": "안녕?"},
                    {"role": "assistant", "content": "안녕하세요."},
                ],
                [{"role": "assistant", "content": "먼저 말함"}, {"role": "user", "content": "x"}],
                [{"role": "user", "content": "질문만"}],
            ]
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    rows = load(buf.getvalue(), "chat.parquet")
    assert [e.response for e in rows.examples] == ["안녕하세요."]
    assert sorted(r.reason for r in rows.rejected) == ["bad_order", "bad_order"]
    with pytest.raises(DatasetTooLarge):
        load(buf.getvalue(), "chat.parquet", max_rows=2)


def test_sharegpt_source_with_system_and_unknown_role() -> None:
    data = json.dumps(
        [
            {
                "conversations": [
                    {"from": "system", "value": "당신은 인사팀 도우미입니다."},
                    {"from": "human", "value": "연차는?"},
                    {"from": "gpt", "value": "15일"},
                    {"from": "human", "value": "이월은?"},
                    {"from": "gpt", "value": "최대 5일"},
                ]
            },
            {"conversations": [{"from": "robot", "value": "?"}]},
        ]
    ).encode()
    rows = load(data, "chat.json")
    (example,) = rows.examples
    assert example.system == "당신은 인사팀 도우미입니다." and len(example.turns) == 4
    assert [r.reason for r in rows.rejected] == ["bad_role"]


# -- conversion ------------------------------------------------------------------------


def test_alpaca_and_sharegpt_rows_follow_the_llamafactory_contract() -> None:
    multi = Example(
        (
            Turn("user", "연차는?"),
            Turn("assistant", "15일"),
            Turn("user", "이월은?"),
            Turn("assistant", "최대 5일"),
        ),
        system="HR",
        input="2026년 기준",
    )
    alpaca = to_alpaca(multi)
    assert alpaca == {
        "instruction": "이월은?",
        "input": "2026년 기준",
        "output": "최대 5일",
        "system": "HR",
        "history": [["연차는?", "15일"]],
    }
    sharegpt = to_sharegpt(multi)
    assert [m["from"] for m in sharegpt["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert sharegpt["conversations"][2]["value"] == "이월은?\n2026년 기준"
    info = dataset_info("hr", "sharegpt", {"train": "hr_train.json"})
    assert info["hr_train"]["columns"] == {"messages": "conversations", "system": "system"}
    assert info["hr_train"]["tags"]["assistant_tag"] == "gpt"
    check_llamafactory_rows([sharegpt], info["hr_train"])
    check_llamafactory_rows([alpaca], dataset_info("hr", "alpaca", {"t": "f"})["hr_t"])
    assert from_record(alpaca, "alpaca") == multi
    with pytest.raises(ValueError, match="odd number"):
        check_llamafactory_rows(
            [{"conversations": [{"from": "human", "value": "x"}]}], info["hr_train"]
        )


def test_normalisation_and_dedupe_keep_the_first_occurrence() -> None:
    assert normalize("  Ｈｅｌｌｏ\u3000 World\n") == "hello world"
    rows = [qa("VPN 재설정?", "포털", "r1"), qa("vpn  재설정?", " 포털 ", "r2"), qa("x", "y", "r3")]
    kept, dropped = deduplicate(rows)
    assert [e.ref for e in kept] == ["r1", "r3"]
    assert dropped[0].reason == "duplicate" and dropped[0].detail == "same as r1"


def test_split_is_seeded_stable_under_additions_and_never_empty() -> None:
    examples = [qa(f"질문 {i}", f"답 {i}", f"r{i}") for i in range(200)]
    train, val = split(examples, 0.1, seed=7)
    _, again_val = split(list(reversed(examples)), 0.1, seed=7)
    assert {e.ref for e in val} == {e.ref for e in again_val}
    assert 10 <= len(val) <= 30 and len(train) + len(val) == 200
    more = [*examples, *(qa(f"new {i}", "a", f"n{i}") for i in range(50))]
    _, val_more = split(more, 0.1, seed=7)
    assert {e.ref for e in val} <= {e.ref for e in val_more}
    assert {e.ref for e in split(examples, 0.1, seed=8)[1]} != {e.ref for e in val}
    tiny_train, tiny_val = split(examples[:2], 0.1, seed=7)
    assert len(tiny_val) == 1 and len(tiny_train) == 1
    assert split(examples[:5], 0.0, seed=7)[1] == []


def test_quality_report_counts_what_a_reviewer_needs() -> None:
    rows = load(FIXTURE.read_bytes(), FIXTURE.name)
    kept, dropped = deduplicate(rows.examples)
    train, val = split(kept, 0.2, 1)
    report = quality_report(
        source_rows=rows.total,
        train=train,
        val=val,
        rejected=[*rows.rejected, *dropped],
        pii=PiiScrub(),
    )
    assert report["examples"] == 20 and report["duplicates_dropped"] == 2
    assert report["rejected"] == {"duplicate": 2, "empty_output": 1, "wrong_type": 1}
    assert report["empty_fields"]["input"] == 15  # 5 rows carry an input
    assert report["lengths_chars"]["response"]["max"] >= report["lengths_chars"]["response"]["p50"]
    assert {r["ref"] for r in report["rejected_rows"]} >= {"row 11", "row 12", "row 13", "row 14"}


def test_pii_scrub_masks_with_the_anonymize_surface_and_counts_per_type(guard: Any) -> None:
    rows = load(FIXTURE.read_bytes(), FIXTURE.name)
    kept, rejected, report = scrub(
        rows.examples, guard, tenant="dept-ops", classification="internal"
    )
    assert rejected == []
    text = json.dumps([e.texts() for e in kept], ensure_ascii=False)
    for value in ("880101-1234567", "010-2345-6789", "john.smith@example.com", "김민수"):
        assert value not in text
    assert report.entities["KR_RRN"] == 1 and report.entities["PHONE_NUMBER"] == 2
    assert report.entities["EMAIL_ADDRESS"] == 2 and report.entities["CREDIT_CARD"] == 1
    assert report.examples_changed == 2 and report.surface == "anonymize"


def test_a_tenant_rule_that_blocks_rejects_the_row(guard: Any) -> None:
    # project-ai blocks resident registration numbers on the anonymize surface
    rows = [qa("주민등록번호 880101-1234567 확인", "확인했습니다", "r1"), qa("안녕", "네", "r2")]
    kept, rejected, _ = scrub(rows, guard, tenant="project-ai", classification="internal")
    assert [e.ref for e in kept] == ["r2"]
    assert rejected[0].reason == "pii_blocked" and "KR_RRN" in rejected[0].detail


def test_build_files_picks_the_format_and_checks_every_row() -> None:
    single = [qa("a", "b"), qa("c", "d")]
    prepared = build_files("hr", None, single[:1], single[1:], {"x": 1})
    assert prepared.format == "alpaca"
    assert set(prepared.files) == {"hr_train.json", "hr_val.json", "dataset_info.json"}
    info = json.loads(prepared.files["dataset_info.json"])
    assert info["hr_val"]["file_name"] == "hr_val.json"
    multi = Example((Turn("user", "a"), Turn("assistant", "b")) * 2)
    assert build_files("hr", None, [multi], [], {}).format == "sharegpt"
    same = build_files("hr", None, single[:1], single[1:], {"x": 2})
    assert same.content_sha256 == prepared.content_sha256
