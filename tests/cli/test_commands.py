"""The CLI as a user runs it: exit codes, one line per problem, no traceback, fast start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from steadyflow.chaos.server import ChaosServer

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "steadyflow.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_validate_ok_exits_0() -> None:
    result = _cli("validate", "configs/support_triage.yaml")
    assert result.returncode == 0, result.stderr


def test_validate_broken_files_exits_2_with_one_line_per_problem_and_no_traceback() -> None:
    files = ["tests/fixtures/invalid/misspelt_stage_key.yaml", "tests/fixtures/invalid/python_tag.yaml"]
    result = _cli("validate", "configs/support_triage.yaml", *files)
    assert result.returncode == 2
    expected = "".join((ROOT / f).with_suffix(".expected").read_text() for f in files)
    assert result.stderr == expected
    assert "Traceback" not in result.stderr


def test_schema_is_json() -> None:
    result = _cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "Pipeline"


def test_validate_and_help_do_not_import_prefect_or_any_library_the_checks_run_on() -> None:
    heavy = ("prefect", "openai", "instructor", "guardrails", "presidio_analyzer", "spacy", "onnxruntime")
    code = (
        "import sys; from typer.testing import CliRunner; from steadyflow.cli import app; "
        "CliRunner().invoke(app, ['validate', 'configs/support_triage.yaml']); CliRunner().invoke(app, ['--help']); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_run_with_a_broken_file_exits_2() -> None:
    result = _cli("run", "tests/fixtures/invalid/unknown_model_in_ladder.yaml")
    assert result.returncode == 2 and "unknown model 'fats'" in result.stderr


def test_report_prints_true_cost_by_stage_model_and_rung(tmp_path: Path, chaos: ChaosServer) -> None:
    import asyncio

    from steadyflow.audit.ledger import RunLedger
    from steadyflow.audit.log import DecisionLog
    from steadyflow.core.document import Document
    from steadyflow.spec import load_pipeline
    from steadyflow.stages.engine import Engine

    chaos.script.extend(
        [
            {"fault": "http_503"},
            {"content": {"category": "x"}},
            {"content": {"category": "billing", "priority": "low", "summary": "refund"}},
        ]
    )
    pipeline = load_pipeline(
        ROOT / "configs/support_triage.yaml",
        [
            "models.small.provider=openai",
            f"models.small.base_url={chaos.base_url}",
            "models.small.price.input_per_mtok=1",
            "models.small.price.output_per_mtok=2",
            "stages.triage.validate=[]",
            "stages.triage.input.redact_pii=null",
        ],
    )

    async def go() -> list:
        engine = Engine.create(pipeline, "run-r", 1)
        try:
            return await engine.run_stage("triage", [Document("d1", "please refund my invoice", "mem")])
        finally:
            await engine.aclose()

    store, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("run-r", "support-triage", "1", None)
    store.add(asyncio.run(go()))
    store.close()
    ledger.close()
    result = _cli("report", "run-r", "--db", str(tmp_path / "decisions.sqlite"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    [line] = [x for x in data["lines"] if x["producer"] == "small"]
    assert (line["attempts"], line["failed"], line["reasks"], line["accepted"]) == (3, 2, 1, 1)
    assert line["usd"] > line["usd_failed"] > 0 and data["total"]["usd"] == round(line["usd"], 6)
    table = _cli("report", "--db", str(tmp_path / "decisions.sqlite"))
    assert table.returncode == 0 and "small" in table.stdout and "re-asks" in table.stdout
    missing = _cli("report", "nope", "--db", str(tmp_path / "decisions.sqlite"))
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr
