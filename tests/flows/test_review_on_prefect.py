"""`steadyflow review --prefect`: the review flow pauses with a form per document; answers resume it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer
from tests.cli.test_review import _run
from tests.conftest import prefect_post

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _paused(api: str, name: str, process: subprocess.Popen[str], seen: int) -> str:
    """The review flow run's id once it is paused for the next document (its pause count above ``seen``)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        runs = prefect_post(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})
        for run in runs:
            if run["name"] and run["state"]["state_details"].get("pause_key") == f"review-{seen + 1}":
                flows = prefect_post(api, "/flows/filter", {"flows": {"id": {"any_": [run["flow_id"]]}}})
                if flows and flows[0]["name"] == name:
                    return str(run["id"])
        time.sleep(0.5)
    raise AssertionError("the review flow never paused")


def test_a_reviewer_answers_the_forms_and_the_decisions_land_like_a_terminal_review(
    tmp_path: Path, chaos: ChaosServer, prefect_env: dict[str, str]
) -> None:
    file, out = _run(tmp_path, chaos)  # d1, d2, d3 flagged
    command = [sys.executable, "-m", "steadyflow.cli", "review", str(file), "--output", str(out), "--prefect"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=prefect_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    api = prefect_env["PREFECT_API_URL"]
    try:
        answers = [
            {"reviewer": "carol", "decision": "accept", "s__category": "technical"},
            {"reviewer": "carol", "decision": "correct", "s__category": "billing"},
            {"reviewer": "carol", "decision": "skip", "s__category": "billing"},
        ]
        for seen, answer in enumerate(answers):
            run_id = _paused(api, "review-reviewed", process, seen)
            prefect_post(api, f"/flow_runs/{run_id}/resume", {"run_input": answer})
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "2 decided" in stdout
    rows = [json.loads(line) for line in (out / "reviewed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["outputs"]["s"]["category"], r["reviewed"]["action"]) for r in rows] == [
        ("d1.txt", "technical", "accepted"),
        ("d2.txt", "billing", "corrected"),
    ]
    with sqlite3.connect(out / "decisions.sqlite") as db:
        assert db.execute("SELECT reviewer, action FROM reviews").fetchall() == [
            ("carol", "accepted"),
            ("carol", "corrected"),
        ]


def test_review_in_the_ui_needs_a_server_a_person_can_open(tmp_path: Path, chaos: ChaosServer) -> None:
    file, out = _run(tmp_path, chaos)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "steadyflow.cli", "review", str(file), "--output", str(out), "--prefect"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "PREFECT_API_URL" in result.stderr and len(result.stderr.splitlines()) == 1
