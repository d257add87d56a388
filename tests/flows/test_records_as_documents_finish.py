"""Records are written as documents finish, not per chunk; a document's latency is its own time, queueing apart.

Real HTTP to a chaos endpoint that takes 300 ms a call and serves one call at a time
(``max_concurrency: 1``), with one 50-document chunk: the batch runs without Prefect.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyflow.audit.ledger import RunLedger
from steadyflow.audit.log import DecisionLog
from steadyflow.audit.report import run_overview
from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.core.document import Document
from steadyflow.runner.run import RunOptions
from steadyflow.runner.summary import RunSummary
from steadyflow.spec.loader import LoadedPipeline, load_pipeline
from tests.conftest import batch_without_prefect, run_stage

LATENCY_MS = 300
PIPELINE = """
pipeline: timing
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 10, max_concurrency: 1}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder: [{{model: m, reasks: 0, retries: 0}}]
sink: {{kind: jsonl, path: out.jsonl}}
run: {{concurrency: 8, chunk_size: 50}}
"""


@pytest.fixture
def slow_endpoint() -> Iterator[ChaosServer]:
    server = ChaosServer(ChaosConfig(latency_ms=LATENCY_MS)).start()
    yield server
    server.stop()


def _pipeline(tmp_path: Path, url: str) -> LoadedPipeline:
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=url))
    return load_pipeline(tmp_path / "p.yaml")


def test_latency_is_the_documents_own_time_and_queueing_is_recorded_apart(
    tmp_path: Path, slow_endpoint: ChaosServer
) -> None:
    docs = [Document(f"d{i}", f"ticket {i}", "mem") for i in range(5)]
    records = run_stage(_pipeline(tmp_path, slow_endpoint.base_url), "s", docs, concurrency=8)
    assert all(r.status == "validated" for r in records)
    # one call at a time: documents wait for each other, but that is not their own time
    assert max(r.latency_ms for r in records) < 2.5 * LATENCY_MS, [r.latency_ms for r in records]
    queued = sorted(r.queue_ms for r in records)
    assert queued[0] < LATENCY_MS / 2 and queued[-1] > 3 * LATENCY_MS, queued

    store, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("run", "timing", "1", None)
    store.add(records)
    ledger.complete("run", [(store.key(d.id), False) for d in docs], {})
    assert sorted(r["queue_ms"] for r in store.records("run")) == queued
    overview = run_overview(store, ledger, "run")
    assert overview["latency_ms"]["p95"] < 2.5 * LATENCY_MS and overview["queue_ms"]["p95"] > 3 * LATENCY_MS
    store.close()
    ledger.close()


class _Watch:
    """A progress that looks into the store each time a document finishes."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.seen: list[tuple[int, int, int]] = []  # (finished, records stored, documents completed)

    def start(self, total: int | None, skipped: int) -> None:
        pass

    def update(self, summary: RunSummary, finished: int) -> None:
        with sqlite3.connect(self.db) as db:
            stored = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        with sqlite3.connect(self.db.with_name("runs.sqlite")) as ledger:
            completed = ledger.execute("SELECT COUNT(*) FROM completed").fetchone()[0]
        self.seen.append((finished, stored, completed))


def _batch(pipeline: LoadedPipeline, options: RunOptions, out: Path, stop_after: int | None = None) -> RunSummary:
    assert options.output == str(out)
    summary: RunSummary = batch_without_prefect(pipeline, options, 8, stop_after)
    return summary


def test_records_are_stored_as_documents_finish_and_a_crash_keeps_them_exactly_once(
    tmp_path: Path, slow_endpoint: ChaosServer
) -> None:
    pipeline = _pipeline(tmp_path, slow_endpoint.base_url)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"t{i}", "text": f"ticket {i}"}) + "\n" for i in range(8)))
    out = tmp_path / "out"
    watch = _Watch(out / "decisions.sqlite")
    options = RunOptions(input=str(docs), output=str(out), progress=watch)
    _batch(pipeline, options, out, stop_after=3)
    # documents were counted and their records stored one by one while the chunk ran; none completed
    done = len(watch.seen)
    assert 3 <= done < 8 and [finished for finished, _, _ in watch.seen] == list(range(1, done + 1)), watch.seen
    assert all(stored == finished and completed == 0 for finished, stored, completed in watch.seen), watch.seen
    db = sqlite3.connect(out / "decisions.sqlite")
    assert db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == done  # the crash lost none of them
    db.close()

    resumed = RunOptions(input=str(docs), output=str(out), run_id=options.run_id, resume=True)
    summary = _batch(pipeline, resumed, out)
    assert summary.documents == 8 and summary.outputs == 8
    db = sqlite3.connect(out / "decisions.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM decisions").fetchone() == (8, 8)
    ledger = sqlite3.connect(out / "runs.sqlite")
    assert (
        ledger.execute("SELECT COUNT(*) FROM superseded").fetchone()[0] == done
    )  # the unfinished chunk's records, set aside once
    ledger.close()
    ids = [json.loads(line)["id"] for line in (out / "out.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(f"t{i}" for i in range(8))
