"""The throughput and memory benchmarks run end to end at a small size and report what docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_every_shipped_pipeline_file_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FLEET_URL", "http://127.0.0.1:1"
    )  # the routing pipelines take their endpoint from the benchmark
    files = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("benchmarks/pipelines/*.yaml")])
    assert len(files) >= 5
    for file in files:
        load_pipeline(file)  # raises SpecError with every problem


def test_throughput_benchmark_compares_three_loops_over_the_same_documents() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/throughput.py",
            "--json",
            "--documents",
            "150",
            "--latency-ms",
            "20",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    [round_] = data["rounds"]
    assert round_["by_rung"] == {"triage": {"model:m": 150}}  # steadyflow delivered every document from the model
    for key in ("hand_loop_docs_per_s", "hand_loop_aiohttp_docs_per_s", "steadyflow_docs_per_s"):
        assert data[key] > 0
    # the ratio is the loops' speeds (docs/s, kept to 0.1): their seconds are kept to 0.01, too coarse to check it with
    speeds = round_["steadyflow_docs_per_s"] / round_["hand_loop_docs_per_s"]
    assert data["ratio"] == pytest.approx(speeds, rel=0.01)
    assert "round 1:" in result.stderr


def test_memory_benchmark_reports_peak_rss_per_size() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/memory.py", "--json", "--sizes", "50,200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert [(r["documents"], r["outputs"]) for r in data["runs"]] == [(50, 50), (200, 200)]
    assert all(r["peak_rss_mb"] > 50 for r in data["runs"])  # a Python process with Prefect and instructor loaded
    assert data["ratio_peak_rss"] == pytest.approx(
        data["runs"][1]["peak_rss_mb"] / data["runs"][0]["peak_rss_mb"], abs=0.001
    )
