"""The run's summary in the Prefect UI, seen by a real browser (Debian's headless Chromium via Playwright)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"  # .ci/run installs Debian's chromium; Playwright never downloads a browser
# flags that keep Chromium from reaching for the (closed) network at start
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# screenshots to look at after the run; outside the repository unless asked
SHOTS = Path(os.environ.get("STEADYFLOW_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "steadyflow-test-artifacts"))


def test_the_flow_run_page_shows_the_run_summary(prefect_env: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: .ci/run installs it (apt-get install chromium)"
    server = ChaosServer(ChaosConfig(seed=12)).start()
    try:
        cmd = [
            sys.executable,
            "-m",
            "steadyflow.cli",
            "run",
            "configs/support_triage.yaml",
            "--json",
            "--output",
            str(tmp_path / "out"),
            "--set",
            "models.small.provider=openai",
            "--set",
            f"models.small.base_url={server.base_url}",
        ]
        result = subprocess.run(cmd, cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{prefect_env['PREFECT_UI_URL']}/runs/flow-run/{summary['flow_run_id']}", wait_until="networkidle")
        page.get_by_text("Artifacts", exact=True).click()
        card = page.get_by_text(
            f"run {summary['run_id']}: {summary['documents']} documents, {summary['outputs']} outputs, "
            f"{summary['quarantined']} quarantined"
        )
        expect(card).to_be_visible(timeout=30_000)
        text = card.inner_text()
        assert "latency p50" in text and "p95" in text and "by rung: triage:" in text and "failing validators:" in text
        for rung, count in summary["by_rung"]["triage"].items():
            assert f"{rung} {count}" in text
        page.screenshot(path=str(SHOTS / "flow-run-artifacts-tab.png"))
        card.click()  # the artifact's own page renders the whole markdown report
        expect(page.get_by_role("heading", name="Documents by rung")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("heading", name="Failing validators")).to_be_visible()
        assert page.get_by_role("columnheader", name="cost (USD)").count() == 1
        # the charts: SVG images in the markdown, decoded and drawn by the browser
        expect(page.get_by_role("heading", name="Pictures")).to_be_visible()
        page.get_by_alt_text("triage.summary").scroll_into_view_if_needed()
        drawn = page.evaluate(
            "() => [...document.querySelectorAll('article img')]"
            ".map(i => [i.alt, i.complete && i.naturalWidth > 300 && i.naturalHeight > 50])"
        )
        shown = {alt for alt, ok in drawn if ok}
        assert {"documents by rung", "cost per document", "triage.category", "triage.priority"} <= shown, drawn
        page.screenshot(path=str(SHOTS / "run-summary-artifact.png"), full_page=True)
        browser.close()
    assert (SHOTS / "run-summary-artifact.png").stat().st_size > 10_000
