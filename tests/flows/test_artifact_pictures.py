"""The run artifact's pictures: charts as SVG images in the markdown, beside the previous run, and its drift."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from steadyflow.audit.ledger import read_ledger
from steadyflow.audit.log import DecisionLog
from steadyflow.audit.report import run_overview, run_profiles
from steadyflow.chaos.server import ChaosConfig
from steadyflow.flows.artifact import render_summary
from steadyflow.runner.summary import RunSummary
from tests.audit.test_drift import run_once

IMAGE = re.compile(r"!\[([^\]]+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)")


def artifact(folder: Path, run_id: str) -> str:
    db = folder / "out" / "decisions.sqlite"
    log, ledger = DecisionLog(db, readonly=True), read_ledger(db)
    assert ledger is not None
    try:
        summary = RunSummary(run_id=run_id, pipeline="drifting")
        return render_summary(summary, run_overview(log, ledger, run_id), run_profiles(log, ledger, run_id))
    finally:
        log.close()
        ledger.close()


def charts(markdown: str) -> dict[str, ET.Element]:
    """Each chart's alt text -> its SVG, parsed (a chart that is not well-formed XML fails here)."""
    return {alt: ET.fromstring(base64.b64decode(data)) for alt, data in IMAGE.findall(markdown)}


def test_the_first_run_shows_its_charts_and_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    run_once(tmp_path, "first", ChaosConfig(seed=1, faults={"malformed": 0.1}))
    markdown = artifact(tmp_path, "first")
    found = charts(markdown)
    assert set(found) == {
        "documents by rung",
        "cost per document",
        "triage.category",
        "triage.urgent",
        "triage.score",
        "triage.summary",
    }
    svg = "{http://www.w3.org/2000/svg}"
    rungs = found["documents by rung"]
    labels = [t.text for t in rungs.iter(f"{svg}text")]
    assert "triage: model:small" in labels and "triage: default" in labels
    assert rungs.find(f"{svg}rect").get("fill") == "#ffffff"  # its own background: readable on a dark theme
    assert "nothing to compare it with yet" in markdown


def test_a_later_run_is_drawn_beside_the_previous_one_with_what_drifted(tmp_path: Path) -> None:
    run_once(tmp_path, "before", ChaosConfig(seed=1, faults={"malformed": 0.05}))
    run_once(tmp_path, "after", ChaosConfig(seed=2, faults={"malformed": 0.05}, skew={"category": ("billing", 0.6)}))
    markdown = artifact(tmp_path, "after")
    category = charts(markdown)["triage.category"]
    labels = [t.text for t in category.iter("{http://www.w3.org/2000/svg}text")]
    assert "previous run before" in labels and "run after" in labels  # the legend: two series side by side
    drift = markdown.split("## Drift since the previous run", 1)[1]
    assert "**shifted**" in drift and "field triage.category" in drift
    assert "`steadyflow compare before after --db ...`" in drift
