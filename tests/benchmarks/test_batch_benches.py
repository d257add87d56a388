"""The throughput and memory benchmarks run end to end at a small size and report what docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
            "--full",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    [round_] = data["rounds"]
    # the full sandwich ran over the same tickets: every one ended, as an output or a recorded quarantine
    assert round_["full_outputs"] + round_["full_quarantined"] == 150 and round_["full_outputs"] > 100
    assert data["full_ratio"] == pytest.approx(round_["full_docs_per_s"] / round_["steadyflow_docs_per_s"], rel=0.01)
    assert data["full_cpu_ms_per_doc"] > data["steadyflow_cpu_ms_per_doc"] > 0  # the checks cost CPU, and it shows
    assert round_["by_rung"] == {"triage": {"model:m": 150}}  # steadyflow delivered every document from the model
    for key in ("hand_loop_docs_per_s", "hand_loop_aiohttp_docs_per_s", "steadyflow_docs_per_s"):
        assert data[key] > 0
    # the ratio is the loops' speeds (docs/s, kept to 0.1): their seconds are kept to 0.01, too coarse to check it with
    speeds = round_["steadyflow_docs_per_s"] / round_["hand_loop_docs_per_s"]
    assert data["ratio"] == pytest.approx(speeds, rel=0.01)
    assert "round 1:" in result.stderr


def test_the_full_sandwich_benchmark_checks_as_the_example_does() -> None:
    example = load_pipeline(ROOT / "configs" / "support_triage.yaml").spec.stages[0]
    full = load_pipeline(ROOT / "benchmarks" / "pipelines" / "throughput_full.yaml").spec.stages[0]
    bare = load_pipeline(ROOT / "benchmarks" / "pipelines" / "throughput.yaml").spec.stages[0]

    def without_labels(check: Any) -> dict[str, Any]:
        return {k: v for k, v in check.model_dump().items() if k != "labels"}

    assert full.input == example.input
    assert [without_labels(c) for c in full.validate_] == [without_labels(c) for c in example.validate_]
    for theirs, ours in zip(example.validate_, full.validate_, strict=True):  # "other" has a description too
        assert (getattr(theirs, "labels", None) or {}).items() <= (getattr(ours, "labels", None) or {}).items()
    assert (full.prompt, full.output, full.ladder) == (bare.prompt, bare.output, bare.ladder)


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
