"""The routing benchmark runs end to end on a small cut of the repository's scenario and reports every metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "benchmarks" / "scenarios" / "fleet.yaml"


@pytest.mark.slow  # runs the routing benchmark over its scenario: a benchmark, not the inner loop
def test_three_strategies_one_json_object_nothing_lost(tmp_path: Path) -> None:
    scenario = yaml.safe_load(FLEET.read_text())
    scenario["requests"] = 120
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(scenario))
    result = subprocess.run(
        [sys.executable, "benchmarks/routing.py", "--fleet", str(small), "--json", "--concurrency", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    for name in ("direct", "static", "router"):
        metrics = data[name]
        assert metrics["requests"] == 120 and metrics["lost"] == 0
        assert set(metrics["latency_ms"]) >= {"p50", "p95", "p99"} and metrics["cost_per_10k_usd"] > 0
        assert 0 <= metrics["accepted_and_correct"] <= metrics["structured_output_success"] <= 1
    assert data["router"]["structured_output_success"] == 1.0  # rules and the default deliver what models do not
    assert data["router"]["cost_per_10k_usd"] < data["direct"]["cost_per_10k_usd"]
    assert {"router_cost_vs_direct", "router_p50_vs_direct", "router_p95_vs_static"} <= set(data["ratios"])
    assert "strategy" in result.stderr and "router" in result.stderr
