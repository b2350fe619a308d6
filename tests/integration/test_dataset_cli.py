"""``llmflow dataset ...`` end to end on its own embedded platform (a fresh data directory):
import with the quality table, a second version, list, diff, export, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmflow.commands_dataset import dataset_app

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "datasets" / "ko_en_instructions.jsonl"
sys.path.insert(0, str(REPO / "tests" / "unit"))  # the Dify double of the unit tests


def test_registered_on_the_llmflow_command() -> None:
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "llmflow"), "dataset", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for command in ("import", "import-dify", "list", "show", "export", "diff"):
        assert command in done.stdout


def test_import_list_diff_export(tmp_path: Path) -> None:
    env = {"LLMFLOW_DATA_DIR": str(tmp_path / "state"), "LLMFLOW_PROFILE": "embedded"}
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(dataset_app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    out = invoke("import", str(FIXTURE), "-t", "dept-cli", "-n", "faq")
    assert "faq@v1" in out and "stored" in out and "duplicates dropped" in out
    assert "MLflow not configured" in out  # said, not silently skipped

    csv = tmp_path / "more.csv"
    csv.write_text("질문,답변\n주차 등록은?,총무팀에 신청하세요.\n연차는?,15일\n", encoding="utf-8")
    second = json.loads(invoke("import", str(csv), "-t", "dept-cli", "-n", "faq", "--json"))
    assert second["version"] == "v2" and second["report"]["examples"] == 2

    versions = json.loads(invoke("list", "-t", "dept-cli", "--json"))
    assert [v["version"] for v in versions] == ["v1", "v2"]

    diff = json.loads(invoke("diff", "faq@v1", "v2", "-t", "dept-cli", "--json"))
    assert diff["rows"] == {"added": 2, "removed": 20, "changed": 0, "unchanged": 0}

    shown = json.loads(invoke("show", "faq", "-t", "dept-cli", "--json"))
    assert shown["version"] == "v2" and "faq_train.json" in shown["files"]
    assert shown["report"]["pii"]["surface"] == "anonymize"

    dest = tmp_path / "export"
    invoke("export", "faq@v1", str(dest), "-t", "dept-cli")
    assert (dest / "faq_train.json").exists() and (dest / "manifest.json").exists()

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    result = runner.invoke(
        dataset_app, ["import", str(broken), "-t", "dept-cli", "-n", "x"], env=env
    )
    assert result.exit_code == 1 and "line 2 is not valid JSON" in result.output
    result = runner.invoke(
        dataset_app, ["import", str(csv), "-t", "dept-cli", "-n", "x", "--map", "output"], env=env
    )
    assert result.exit_code == 2 and "FIELD=COLUMN" in result.output


def test_import_dify_pages_through_the_console_api(tmp_path: Path) -> None:
    from test_dataset_dify import ADMIN_KEY, APP, WORKSPACE, DifyDouble

    server = DifyDouble()
    url = server.start()
    try:
        env = {
            "LLMFLOW_DATA_DIR": str(tmp_path / "state"),
            "LLMFLOW_DIFY__ADMIN_API_KEY": ADMIN_KEY,
            "LLMFLOW_DATASETS__DIFY_PAGE_LIMIT": "2",
        }
        args = ["import-dify", "-t", "dept-cli", "-n", "logs", "--dify-url", url]
        args += ["--app-id", APP, "--workspace-id", WORKSPACE, "--json"]
        result = CliRunner().invoke(dataset_app, args, env=env)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["format"] == "sharegpt" and body["source"]["kind"] == "dify-console-messages"
    assert body["report"]["rejected"] == {"dify_error": 1, "disliked": 1}
    assert body["train_rows"] + body["val_rows"] == 2
