"""`steadyflow eval`: a pipeline scored against a labelled dataset over real HTTP, gates for CI, reports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from steadyflow.chaos.server import ChaosServer

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "steadyflow.cli", "eval"]
CHECK = "{layer: semantic, check: confidence, field: category, min: 0.8, on_fail: review}"

# (id, text, label, tags, the endpoint's answer, its log-probability): run one at a time, in this order
EXAMPLES: list[tuple[str, str, str, list[str], Any, float]] = [
    ("e1", "I was charged twice for March", "billing", ["vip"], "billing", -0.01),  # right, sure: accepted
    ("e2", "The app crashes at start", "technical", [], "technical", -0.05),  # right, sure: accepted
    ("e3", "Refund the duplicate invoice", "billing", ["vip"], "technical", -0.1),  # wrong, sure: accepted
    ("e4", "Export fails with error 500", "technical", [], "technical", -0.5),  # right, unsure: review
    ("e5", "Why is my bill higher", "billing", [], "billing", -1.0),  # right, unsure: review
    ("e6", "Sync stopped working", "technical", [], "urgent", -0.01),  # not an enum value: quarantined
]


def pipeline(tmp_path: Path, base_url: str, check: str = CHECK) -> Path:
    path = tmp_path / "triage.yaml"
    path.write_text(f"""
pipeline: eval-triage
version: 2.0.0
models:
  m: {{provider: openai, base_url: "{base_url}", mode: json_schema}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    validate: [{check}]
    ladder: [{{model: m, reasks: 0, retries: 0}}]
""")
    return path


def dataset(tmp_path: Path, rows: list[dict[str, Any]] | None = None, name: str = "labelled.jsonl") -> Path:
    if rows is None:
        rows = [
            {"id": i, "text": t, "expected": {"category": label}, "tags": tags} for i, t, label, tags, *_ in EXAMPLES
        ]
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def script(server: ChaosServer, plans: list[dict[str, Any]] | None = None) -> None:
    if plans is None:
        plans = [{"content": {"category": answer}, "logprob": logprob} for *_, answer, logprob in EXAMPLES]
    request = urllib.request.Request(
        f"{server.base_url.removesuffix('/v1')}/_chaos/script", data=json.dumps(plans).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["queued"] == len(plans)


def requests_sent(server: ChaosServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.base_url.removesuffix('/v1')}/_chaos/requests", timeout=10) as response:
        return list(json.load(response))


def run_eval(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def scripted_eval(server: ChaosServer, tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The six examples, one at a time so that the endpoint's script follows the dataset's order."""
    script(server)
    return run_eval(pipeline(tmp_path, server.base_url), "--dataset", dataset(tmp_path), "--concurrency", "1", *args)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- the numbers --------------------------------------------------------------------------------


def test_json_numbers_of_a_scripted_run(chaos: ChaosServer, tmp_path: Path) -> None:
    result = scripted_eval(chaos, tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["pipeline"], data["version"], data["dataset"]) == (
        "eval-triage",
        "2.0.0",
        str(tmp_path / "labelled.jsonl"),
    )
    assert (data["documents"], data["accepted"], data["review"], data["quarantined"]) == (6, 3, 2, 1)
    assert data["coverage"] == 0.5
    assert data["failed"] == []
    assert data["cost_usd"] == 0.0 and data["latency_ms"]["p50"] > 0
    field = data["fields"]["triage.category"]
    assert field["scorer"] == "exact"
    assert (field["n"], field["accuracy"], field["mean_score"]) == (6, 4 / 6, 4 / 6)
    assert (field["accepted"], field["accepted_accuracy"]) == (3, 2 / 3)
    assert field["confusion"] == {
        "billing": {"billing": 2, "technical": 1, "(none)": 0},
        "technical": {"billing": 0, "technical": 2, "(none)": 1},
    }
    assert field["by_rung"] == {
        "model:m": {"n": 5, "correct": 4, "accuracy": 0.8},
        "quarantined": {"n": 1, "correct": 0, "accuracy": 0.0},
    }
    assert field["by_tag"] == {"vip": {"n": 2, "correct": 1, "accuracy": 0.5}}
    assert [(row["threshold"], row["kept"], row["coverage"], row["accuracy"]) for row in field["curve"]] == [
        (0.0, 6, 1.0, 4 / 6),
        (0.5, 4, 4 / 6, 3 / 4),  # exp(-0.5) = 0.607
        (0.6, 4, 4 / 6, 3 / 4),
        (0.7, 3, 3 / 6, 2 / 3),
        (0.8, 3, 3 / 6, 2 / 3),
        (0.85, 3, 3 / 6, 2 / 3),
        (0.9, 3, 3 / 6, 2 / 3),  # exp(-0.1) = 0.905
        (0.95, 2, 2 / 6, 1.0),  # exp(-0.05) = 0.951
        (0.99, 1, 1 / 6, 1.0),  # exp(-0.01) = 0.990
    ]
    assert len(requests_sent(chaos)) == 6 and not chaos.script  # one call per example, the script used up


def test_text_summary_without_json(chaos: ChaosServer, tmp_path: Path) -> None:
    result = scripted_eval(chaos, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("eval eval-triage 2.0.0 on ")
    assert "6 documents, 3 accepted (coverage 50.0%), 2 for review, 1 quarantined" in lines[0]
    assert "  triage.category (exact): accuracy 66.7%, accepted 3 at 66.7%" in lines
    assert "    by rung: model:m 80.0% of 5, quarantined 0.0% of 1" in lines
    assert any(line.split() == ["technical", "0", "2", "1"] for line in lines)  # confusion row, (none) last
    assert result.stderr == ""


# ---- gates --------------------------------------------------------------------------------------


def test_fail_under_accuracy_exits_1_with_the_reason(chaos: ChaosServer, tmp_path: Path) -> None:
    result = scripted_eval(chaos, tmp_path, "--json", "--fail-under", "category=0.9")
    assert one_line_error(result, 1) == "below --fail-under: triage.category accuracy 0.667 < 0.9"
    assert json.loads(result.stdout)["failed"] == ["triage.category accuracy 0.667 < 0.9"]


def test_a_gate_that_holds_exits_0(chaos: ChaosServer, tmp_path: Path) -> None:
    result = scripted_eval(chaos, tmp_path, "--fail-under", "triage.category=0.65", "--fail-under", "coverage=0.5")
    assert result.returncode == 0, result.stderr
    assert "below --fail-under" not in result.stderr


def test_accepted_and_coverage_gates(chaos: ChaosServer, tmp_path: Path) -> None:
    result = scripted_eval(
        chaos,
        tmp_path,
        "--fail-under",
        "accepted:category=0.7",
        "--fail-under",
        "coverage=0.6",
        "--fail-under",
        "category=0.6",
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "below --fail-under: triage.category accuracy of accepted 0.667 < 0.7",
        "below --fail-under: coverage 0.500 < 0.6",
    ]
    held = scripted_eval(chaos, tmp_path, "--fail-under", "accepted:triage.category=0.66")
    assert held.returncode == 0, held.stderr


@pytest.mark.parametrize(
    ("gate", "words"),
    [
        ("priority=0.9", "no single labelled field 'priority'"),
        ("accepted:priority=0.9", "no single labelled field 'priority'"),
        ("summarize.category=0.9", "no single labelled field"),
        ("category=x", "expected FIELD=0.9"),
        ("category=1.5", "expected FIELD=0.9"),
        ("category=-0.1", "expected FIELD=0.9"),
        ("category", "expected FIELD=0.9"),
        ("=0.9", "no single labelled field"),
    ],
)
def test_a_bad_gate_exits_2_before_any_call(chaos: ChaosServer, tmp_path: Path, gate: str, words: str) -> None:
    result = run_eval(pipeline(tmp_path, chaos.base_url), "--dataset", dataset(tmp_path), "--fail-under", gate)
    line = one_line_error(result)
    assert words in line and gate in line
    assert requests_sent(chaos) == []


# ---- reports ------------------------------------------------------------------------------------


def test_markdown_and_html_reports_are_written(chaos: ChaosServer, tmp_path: Path) -> None:
    md = tmp_path / "report.md"
    result = scripted_eval(chaos, tmp_path, "--report", md)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"report: {md}"
    page = md.read_text(encoding="utf-8")
    assert page.startswith("# Evaluation of eval-triage 2.0.0\n")
    assert "| triage.category | exact | 66.7% | 0.667 | 3 | 66.7% |" in page
    assert "| billing | 2 | 1 | 0 |" in page and "| technical | 0 | 2 | 1 |" in page
    html = tmp_path / "report.html"
    result = scripted_eval(chaos, tmp_path, "--json", "--report", html)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the report does not disturb the JSON on stdout
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<table>" in page and "<h2>triage.category</h2>" in page
    for _, text, *_ in EXAMPLES:
        assert text not in page


def test_a_report_path_that_cannot_work_is_refused_before_any_model_call(chaos: ChaosServer, tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing" / "r.md": "folder",
        tmp_path: "is a directory",
        tmp_path / "r.pdf": "name a .md or .html file",
        Path("/proc/self/r.md"): "not writable",
    }
    triage = pipeline(tmp_path, chaos.base_url)
    for report, says in cases.items():
        line = one_line_error(run_eval(triage, "--dataset", dataset(tmp_path), "--report", report))
        assert line.startswith(f"--report {report}: ") and says in line, line
    assert requests_sent(chaos) == []  # nothing was asked of the model


def test_a_report_that_fails_to_write_at_the_end_still_prints_the_evaluation(tmp_path: Path) -> None:
    # The report's folder disappears while the model answers (0.4 s each): the write fails at the end.
    from steadyflow.chaos.server import ChaosConfig

    server = ChaosServer(ChaosConfig(seed=7, latency_ms=400)).start()
    try:
        script(server)
        folder = tmp_path / "reports"
        folder.mkdir()
        args = [pipeline(tmp_path, server.base_url), "--dataset", dataset(tmp_path), "--concurrency", "1"]
        command = [*CLI, *map(str, args), "--json", "--report", str(folder / "r.md")]
        run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not requests_sent(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        folder.rmdir()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        server.stop()
    result = subprocess.CompletedProcess(command, run.returncode, stdout, stderr)
    assert "cannot write the report" in one_line_error(result, 1)
    assert json.loads(stdout)["documents"] == 6  # the evaluation is not thrown away


# ---- bad inputs -----------------------------------------------------------------------------------


def test_a_broken_dataset_exits_2_with_one_line(chaos: ChaosServer, tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "a", "text": "t", "expected": {"category": "billing"}}\n\n{"id": "b", "text": \n')
    line = one_line_error(run_eval(pipeline(tmp_path, chaos.base_url), "--dataset", path))
    assert line.startswith(f"{path}:3: ")
    for content in ("", '{"id": "a", "expected": {"category": "billing"}}\n', "\xff"):
        path.write_text(content, encoding="latin-1")
        assert one_line_error(run_eval(pipeline(tmp_path, chaos.base_url), "--dataset", path)).startswith(str(path))
    missing = one_line_error(run_eval(pipeline(tmp_path, chaos.base_url), "--dataset", tmp_path / "nope.jsonl"))
    assert "cannot read the dataset" in missing
    assert requests_sent(chaos) == []


@pytest.mark.parametrize(
    "expected",
    [
        {"triage": {"category": "billing"}, "summarize": {"summary": "x"}},
        {"summarize": {"summary": "x"}},
        {"summarize.summary": "x", "category": "billing"},
        {"priority": "high"},
    ],
)
def test_labels_for_what_the_pipeline_lacks_exit_2(
    chaos: ChaosServer, tmp_path: Path, expected: dict[str, Any]
) -> None:
    path = dataset(tmp_path, [{"id": "a", "text": "t", "expected": expected}])
    line = one_line_error(run_eval(pipeline(tmp_path, chaos.base_url), "--dataset", path))
    assert line.startswith(str(path)) and "does not output" in line
    assert ("summarize" in line) or ("priority" in line)
    assert requests_sent(chaos) == []


def test_an_unknown_stage_option_a_bad_scorer_and_a_bad_pipeline_exit_2(chaos: ChaosServer, tmp_path: Path) -> None:
    file = pipeline(tmp_path, chaos.base_url)
    line = one_line_error(run_eval(file, "--dataset", dataset(tmp_path), "--stage", "summarize"))
    assert "no stage 'summarize'" in line
    scorers = dataset(
        tmp_path,
        [
            {"scorers": {"triage.category": "levenshtein"}},
            {"id": "a", "text": "t", "expected": {"category": "billing"}},
        ],
    )
    assert "unknown scorer 'levenshtein'" in one_line_error(run_eval(file, "--dataset", scorers))
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline: x\nstages: []\n")
    result = run_eval(broken, "--dataset", dataset(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(broken) in result.stderr
    assert requests_sent(chaos) == []


# ---- what the endpoint sees ---------------------------------------------------------------------


def test_labels_are_never_sent_to_the_endpoint(chaos: ChaosServer, tmp_path: Path) -> None:
    # the label must be a value the enum allows (others are refused before any call), so the tags and the
    # "expected" key carry the sentinels here
    label, tag, visible = "technical", "TAG-ONLY-1184", "DOCUMENT-TEXT-5521"
    rows = [
        {"id": "a", "text": f"charged twice {visible}", "expected": {"category": label}, "tags": [tag]},
        {"id": "b", "text": "the app crashes", "expected": {"triage": {"category": label}}, "tags": [tag, "x"]},
    ]
    script(chaos, [{"content": {"category": "billing"}, "logprob": -0.1}] * 2)
    result = run_eval(pipeline(tmp_path, chaos.base_url), "--dataset", dataset(tmp_path, rows), "--json")
    assert result.returncode == 0, result.stderr
    sent = requests_sent(chaos)
    assert len(sent) == 2
    bodies = json.dumps(sent)
    assert visible in bodies  # the document itself does reach the model
    assert tag not in bodies and "TAG-ONLY" not in bodies
    assert "expected" not in json.dumps([m["content"] for body in sent for m in body["messages"]])
    assert json.loads(result.stdout)["fields"]["triage.category"]["accuracy"] == 0.0  # billing, not technical


def test_set_points_the_pipeline_elsewhere_and_csv_datasets_work(chaos: ChaosServer, tmp_path: Path) -> None:
    file = pipeline(tmp_path, "http://127.0.0.1:9/v1")  # nothing listens there
    csv = tmp_path / "labelled.csv"
    csv.write_text("id,text,expected.triage.category,tags\n1,charged twice,billing,vip;de\n2,app crashes,technical,\n")
    script(
        chaos,
        [
            {"content": {"category": "billing"}, "logprob": -0.01},
            {"content": {"category": "billing"}, "logprob": -0.01},
        ],
    )
    result = run_eval(
        file, "--dataset", csv, "--json", "--concurrency", "1", "--set", f"models.m.base_url={chaos.base_url}"
    )
    assert result.returncode == 0, result.stderr
    field = json.loads(result.stdout)["fields"]["triage.category"]
    assert (field["n"], field["accuracy"]) == (2, 0.5)
    assert field["by_tag"] == {
        "de": {"n": 1, "correct": 1, "accuracy": 1.0},
        "vip": {"n": 1, "correct": 1, "accuracy": 1.0},
    }
    assert len(requests_sent(chaos)) == 2
