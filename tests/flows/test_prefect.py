"""Real Prefect: the pinned server serves API and UI; runs go through it end to end."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import ROOT, wait_http

pytestmark = pytest.mark.slow
THIRTY_PERCENT = {
    "rate_limit": 0.05,
    "rate_limit_no_retry_after": 0.02,
    "http_500": 0.03,
    "http_502": 0.03,
    "http_503": 0.03,
    "timeout": 0.02,
    "reset": 0.03,
    "malformed": 0.03,
    "truncated": 0.02,
    "wrong_type": 0.03,
    "empty": 0.01,
}


def test_pinned_prefect_server_serves_api_and_ui(prefect_env: dict[str, str]) -> None:
    assert wait_http(prefect_env["PREFECT_API_URL"] + "/health", 10).strip() == b"true"
    page = wait_http(prefect_env["PREFECT_UI_URL"] + "/", 10).decode()
    assert "<!DOCTYPE html>" in page and '<div id="app"' in page


def on_chaos(server: ChaosServer) -> list[str]:
    """Point the example's model at a chaos endpoint instead of the embedded local model."""
    return ["--set", "models.small.provider=openai", "--set", f"models.small.base_url={server.base_url}"]


def _run(env: dict[str, str], *args: str) -> dict:
    cmd = [sys.executable, "-m", "steadyflow.cli", "run", "configs/support_triage.yaml", "--json", *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_200_documents_with_30_percent_faults_none_lost_none_duplicated(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    docs = tmp_path / "docs.jsonl"
    topics = [
        "my invoice is wrong, refund please",
        "the app crashes with error 500",
        "cannot log in to my account",
        "parcel tracking has not moved",
        "question about pricing",
    ]
    docs.write_text(
        "".join(json.dumps({"id": f"doc-{i:03d}", "text": f"Ticket {i}: {topics[i % 5]}"}) + "\n" for i in range(200))
    )
    server = ChaosServer(ChaosConfig(faults=THIRTY_PERCENT, seed=11, hang_s=4)).start()
    try:
        out = tmp_path / "out"
        summary = _run(
            prefect_env,
            "--input",
            str(docs),
            "--output",
            str(out),
            "--concurrency",
            "16",
            "--chunk-size",
            "40",
            *on_chaos(server),
            "--set",
            "models.small.timeout_s=1",
        )
        stats = dict(server.stats)
    finally:
        server.stop()
    assert summary["documents"] == 200 and summary["outputs"] == 200 and summary["quarantined"] == 0
    assert sum(summary["by_rung"]["triage"].values()) == 200
    assert sum(v for k, v in stats.items() if k != "ok") > 0.2 * sum(stats.values())  # the faults really happened
    rows = [json.loads(line) for line in (out / "support_triage.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"doc-{i:03d}" for i in range(200)]
    assert {r["rungs"]["triage"] for r in rows} <= {"model:small", "rules", "default"}
    db = sqlite3.connect(out / "decisions.sqlite")
    count, distinct = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM decisions WHERE run_id = ?", (summary["run_id"],)
    ).fetchone()
    assert count == distinct == 200
    failed = db.execute('SELECT COUNT(*) FROM decisions WHERE attempts LIKE \'%"error_kind": "%\'').fetchone()[0]
    assert failed > 0
    assert summary["flow_run_id"]


def test_run_on_the_ephemeral_api_too(tmp_path: Path, prefect_env: dict[str, str]) -> None:
    env = {k: v for k, v in prefect_env.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    docs = tmp_path / "in"
    docs.mkdir()
    for i in range(5):
        (docs / f"t{i}.txt").write_text(f"Subject: help {i}\n\nMy parcel tracking is stuck")
    (docs / "bad.txt").write_bytes(b"\xff\xfe broken")
    server = ChaosServer(ChaosConfig(seed=3)).start()
    try:
        summary = _run(env, "--input", str(docs), "--output", str(tmp_path / "out"), *on_chaos(server))
    finally:
        server.stop()
    assert summary["documents"] == 6 and summary["outputs"] == 5 and summary["quarantined"] == 1
    quarantined = json.loads((tmp_path / "out/quarantine.jsonl").read_text())
    assert quarantined["id"] == "bad.txt" and quarantined["reason"].startswith("undecodable")


def test_the_output_cache_persists_across_runs_and_no_cache_bypasses_it(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    server = ChaosServer(ChaosConfig(seed=4)).start()
    pipeline = tmp_path / "cached.yaml"
    pipeline.write_text(f"""
pipeline: cached
models:
  m: {{provider: openai, base_url: "{server.base_url}", price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder: [{{cache: exact}}, {{model: m}}]
run: {{cache_path: cache.sqlite}}
""")
    docs = tmp_path / "in"
    docs.mkdir()
    for i in range(4):
        (docs / f"t{i}.txt").write_text(f"ticket {i}: my invoice is wrong")

    def run(*extra: str) -> dict:
        cmd = [
            sys.executable,
            "-m",
            "steadyflow.cli",
            "run",
            str(pipeline),
            "--json",
            "--input",
            str(docs),
            "--output",
            str(tmp_path / "out"),
            *extra,
        ]
        result = subprocess.run(cmd, cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    try:
        first, second, bypass = run(), run(), run("--no-cache")
    finally:
        server.stop()
    assert first["by_rung"]["s"] == {"model:m": 4} and first["cost_usd"] > 0
    assert second["by_rung"]["s"] == {"cache:exact": 4} and second["cost_usd"] == 0
    assert bypass["by_rung"]["s"] == {"model:m": 4}
    assert (tmp_path / "cache.sqlite").exists()
