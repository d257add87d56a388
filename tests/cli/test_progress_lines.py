"""Progress outside a terminal: plain lines on stderr at a steady interval.

They come before any chunk ends, with honest low rates.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.cli.progress import LineProgress, eta_text, rate_text
from steadyflow.runner.summary import RunSummary
from tests.conftest import ROOT


def test_low_rates_keep_their_significant_digits() -> None:
    assert rate_text(0.045) == "0.045 docs/s (2.7 docs/min)"
    assert rate_text(0.0005) == "0.0005 docs/s (1.8 docs/h)"
    assert rate_text(2.74) == "2.7 docs/s" and rate_text(57.3) == "57 docs/s" and rate_text(0) == "0 docs/s"
    assert eta_text(0, 70, 600) == "-" and eta_text(3, 70, 66.7) == "24m50s" and eta_text(10, None, 5) == "-"


def test_lines_come_at_the_interval_before_any_document_finishes() -> None:
    stream = io.StringIO()
    lines = LineProgress("r1", stream, every_s=0.05)
    lines.start(total=70, skipped=0)
    deadline = time.monotonic() + 30
    while not stream.getvalue().endswith("\n"):  # a whole line, with no document finished
        assert time.monotonic() < deadline, "no progress line"
        time.sleep(0.01)
    first = stream.getvalue().splitlines()
    assert first and first[0].startswith("progress r1: 0/70 documents, 0 docs/s, ETA -"), first
    summary = RunSummary(run_id="r1", pipeline="p")
    summary.by_rung["triage"]["model:m"] += 3
    lines.update(summary, 3)
    lines.stop()
    last = stream.getvalue().splitlines()[-1]
    assert "3/70 documents" in last and "docs/s" in last and "ETA " in last and last.endswith("| triage: model:m 3")


@pytest.fixture
def slow_endpoint() -> Iterator[ChaosServer]:
    server = ChaosServer(ChaosConfig(latency_ms=400)).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_log_file_gets_progress_lines_before_the_first_chunk_ends(
    prefect_env: dict[str, str], slow_endpoint: ChaosServer, tmp_path: Path
) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"""
pipeline: lines
models:
  m: {{provider: openai, base_url: "{slow_endpoint.base_url}", max_concurrency: 1}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder: [{{model: m}}]
""")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": f"ticket {i}"}) + "\n" for i in range(25)))
    out, log = tmp_path / "out", tmp_path / "stderr.log"
    env = {**prefect_env, "STEADYFLOW_PROGRESS_INTERVAL": "1"}
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "run",
        str(pipeline),
        "--input",
        str(docs),
        "--output",
        str(out),
        "--chunk-size",
        "50",
    ]
    with log.open("w") as stderr:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        early: list[
            tuple[str, int, int]
        ] = []  # (a progress line, records stored, documents completed) while the chunk runs
        while process.poll() is None:
            time.sleep(0.5)
            shown = [line for line in log.read_text().splitlines() if line.startswith("progress ")]
            if shown and (out / "decisions.sqlite").is_file() and (out / "runs.sqlite").is_file():
                counts = (_count(out / "decisions.sqlite", "decisions"), _count(out / "runs.sqlite", "completed"))
                if counts[1] == 0:
                    early.append((shown[-1], *counts))
        assert process.wait(300) == 0, log.read_text()[-3000:]
    moving = [
        (line, stored)
        for line, stored, _ in early
        if "/25 documents" in line and not line.split(": ")[1].startswith("0/")
    ]
    assert moving, early  # documents counted, and records stored, inside the only chunk, before it ended
    assert all(stored > 0 for _, stored in moving)
    final = [line for line in log.read_text().splitlines() if line.startswith("progress ")][-1]
    assert "25/25 documents" in final and "docs/s" in final and "triage: model:m 25" in final


def _count(db: Path, table: str) -> int:
    """Rows in one table of a store the run is writing (0 before the run has created it)."""
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
