"""A run's trace in a real collector a user would run: Arize Phoenix (`phoenix serve` on loopback, from PyPI).

The example runs as a Prefect flow against the chaos endpoint with ``telemetry.otlp_endpoint`` set; the
spans are then read back through Phoenix's REST API, and the trace is shown in its UI in headless
Chromium (the screenshot in the README is this test's: ``STEADYFLOW_UPDATE_DOCS=1`` writes it there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import BIN, ROOT, free_port, serving
from tests.flows.test_ui import CHROMIUM, FLAGS, SHOTS

pytestmark = pytest.mark.slow
PHOENIX = BIN.parent / "phoenix" / "bin" / "phoenix"  # `make phoenix` (a dependency of `make test`) installs it
PROJECT = "support-triage-traces"


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Phoenix on a free loopback port, its data in a temporary folder, everything that phones home off."""
    assert PHOENIX.exists(), f"{PHOENIX} is missing: `make phoenix` installs it"
    home = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(home),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": "0",  # its gRPC receiver cannot be turned off; a free port keeps runs apart
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",  # no fonts, version checks or tracking pixels from the UI
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
    }
    with serving([str(PHOENIX), "serve"], env, home / "server.log", f"http://127.0.0.1:{port}/healthz"):
        yield f"http://127.0.0.1:{port}"


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.load(response)


def spans_of(base: str, run_id: str, expected: int) -> list[dict[str, Any]]:
    """Every span of the run's trace, once Phoenix has stored them all (it ingests asynchronously).

    All are there when at least ``expected`` arrived, each one's parent among them, and a second look finds no more.
    """
    deadline = time.monotonic() + 90
    seen = -1
    while True:
        found = _trace(base, run_id)
        ids = {s["context"]["span_id"] for s in found}
        whole = len(found) >= expected and all(s["parent_id"] is None or s["parent_id"] in ids for s in found)
        if (whole and len(found) == seen) or time.monotonic() > deadline:
            return found
        seen = len(found)
        time.sleep(1)


def _trace(base: str, run_id: str) -> list[dict[str, Any]]:
    """The spans Phoenix has stored so far of the trace whose root is the run ``run_id``."""
    try:
        roots = get(base, f"/v1/projects/{PROJECT}/spans?parent_id=null&limit=1000")["data"]
    except urllib.error.HTTPError:  # 404 until the project's first span arrives
        return []
    root = next((s for s in roots if s["attributes"].get("steadyflow.run.id") == run_id), None)
    found: list[dict[str, Any]] = []
    cursor: str | None = ""
    while root is not None and cursor is not None:
        query = {"trace_id": root["context"]["trace_id"], "limit": 1000}
        if cursor:
            query["cursor"] = cursor
        page = get(base, f"/v1/projects/{PROJECT}/spans?{urllib.parse.urlencode(query)}")
        found += page["data"]
        cursor = page.get("next_cursor")
    return found


def test_a_run_s_trace_reaches_phoenix_with_its_attributes_and_no_text(
    phoenix: str, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    server = ChaosServer(ChaosConfig(seed=3, faults={"malformed": 0.15})).start()
    try:
        cmd = [
            sys.executable, "-m", "steadyflow.cli", "run", "configs/support_triage.yaml", "--json",
            "--output", str(tmp_path / "out"),
            "--set", "models.small.provider=openai", "--set", f"models.small.base_url={server.base_url}",
            "--set", f"telemetry.otlp_endpoint={phoenix}", "--set", f"telemetry.project={PROJECT}",
        ]  # fmt: skip
        result = subprocess.run(cmd, cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(note.startswith("telemetry") for note in summary["notes"]), summary["notes"]

    documents = summary["documents"]
    spans = spans_of(phoenix, summary["run_id"], expected=1 + 1 + 2 * documents)
    by_id = {s["context"]["span_id"]: s for s in spans}
    kinds: dict[str, list[dict[str, Any]]] = {"run": [], "chunk": [], "document": [], "attempt": []}
    for span in spans:
        parent = by_id.get(span["parent_id"] or "")
        if parent is None:
            kinds["run"].append(span)
        elif " chunk " in span["name"]:
            kinds["chunk"].append(span)
        elif span["name"] == "triage document":
            kinds["document"].append(span)
        else:
            kinds["attempt"].append(span)
    # run -> stage chunk -> document -> attempt
    (run,) = kinds["run"]
    assert run["name"] == "run support-triage" and run["attributes"]["steadyflow.documents"] == documents
    assert all(by_id[c["parent_id"]] is run for c in kinds["chunk"])
    assert all(" chunk " in by_id[d["parent_id"]]["name"] for d in kinds["document"])
    assert all(by_id[a["parent_id"]]["name"] == "triage document" for a in kinds["attempt"])
    assert len(kinds["document"]) == documents

    statuses = [d["attributes"]["steadyflow.status"] for d in kinds["document"]]
    assert statuses.count("quarantined") == summary["quarantined"]
    for document in kinds["document"]:
        attributes = document["attributes"]
        assert attributes["steadyflow.run.id"] == summary["run_id"] and attributes["steadyflow.document.key"]
        assert (document["status_code"] == "ERROR") == (attributes["steadyflow.status"] == "quarantined")
    calls = [a for a in kinds["attempt"] if a["span_kind"] == "LLM"]
    assert calls, [a["name"] for a in kinds["attempt"]]
    for call in calls:  # the GenAI semantic conventions, and ours
        attributes = call["attributes"]
        assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.request.model"]
        assert attributes["steadyflow.rung"] == 0 and "steadyflow.cost_usd" in attributes
        if "error.type" not in attributes:
            assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.response.model"]
    assert any(a["attributes"].get("error.type") == "invalid_output" for a in calls)  # a malformed answer, re-asked
    checked = [d for d in kinds["document"] if d["attributes"].get("steadyflow.checks.passed")]
    assert checked and any(e["name"].startswith("check ") for d in checked for e in d["events"])

    dump = json.dumps(spans)
    for ticket in sorted((ROOT / "configs" / "data" / "tickets").iterdir()):
        words = ticket.read_text(errors="replace").split()
        if len(words) >= 4:  # empty and near-empty tickets are quarantined before any text is used
            assert " ".join(words[:6]) not in dump, f"text of {ticket.name} is in a span"
    show_in_ui(phoenix, run, calls)


def show_in_ui(base: str, run: dict[str, Any], calls: list[dict[str, Any]]) -> None:
    """The trace in Phoenix's UI: the span tree and a model call's attributes."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: .ci/run installs it (apt-get install chromium)"
    project = next(p["id"] for p in get(base, "/v1/projects")["data"] if p["name"] == PROJECT)
    by_start = sorted(calls, key=lambda c: c["start_time"])  # the first one: the tree shows the run above it
    reasked = next((c for c in by_start if c["attributes"].get("error.type") == "invalid_output"), by_start[0])
    url = f"{base}/projects/{project}/traces/{run['context']['trace_id']}?selectedSpanNodeId={reasked['id']}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "phoenix-trace.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url, wait_until="networkidle", timeout=120_000)
        tree = page.locator('[data-testid="trace-tree"]')
        expect(tree.get_by_text("run support-triage", exact=True)).to_be_visible(timeout=60_000)
        expect(tree.get_by_text("triage chunk 0", exact=True)).to_be_visible()
        details = page.locator('[data-testid="span-details"]')
        details.get_by_role("tab", name="Attributes").click()
        expect(details.get_by_text("gen_ai.request.model", exact=True).first).to_be_visible(timeout=30_000)
        expect(details.get_by_text("steadyflow.rung", exact=True).first).to_be_visible()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 20_000
    if os.environ.get("STEADYFLOW_UPDATE_DOCS"):
        shutil.copy(shot, ROOT / "docs" / "images" / "phoenix-trace.png")
