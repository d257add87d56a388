"""`steadyflow try`: a few documents through the pipeline without Prefect, a readable table, nothing written."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "steadyflow.cli"]
SECRET = "Zebulon-Quartz-9931"


def _try(server: ChaosServer | None, *args: str) -> subprocess.CompletedProcess[str]:
    model = (
        ["--set", "models.small.provider=openai", "--set", f"models.small.base_url={server.base_url}"] if server else []
    )
    cmd = [*CLI, "try", *args, *model]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tickets"
    folder.mkdir()
    for name in ("t01.txt", "t02.txt", "t03.txt", "t04.txt"):
        (folder / name).write_bytes((ROOT / "configs" / "data" / "tickets" / name).read_bytes())
    (folder / "a_binary.txt").write_bytes(f"{SECRET}\x00\x00".encode())
    (folder / "b_empty.txt").write_text("  \n")
    return folder


def test_try_prints_one_row_per_document_and_totals_and_writes_nothing(chaos: ChaosServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = _folder(tmp_path)
    result = _try(
        chaos, "configs/support_triage.yaml", "--input", str(folder), "--limit", "4", "--set", f"run.output={out}"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("try support-triage 1.0.0: 4 documents") and "no Prefect" in lines[0]
    assert lines[1].split()[:3] == ["id", "ended", "by"]
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert list(rows) == ["a_binary.txt", "b_empty.txt", "t01.txt", "t02.txt"]  # the first 4, in source order
    assert (
        rows["a_binary.txt"].split()[1] == "quarantined"
        and "(triage: binary content (NUL bytes))" in rows["a_binary.txt"]
    )
    assert "(triage: empty document)" in rows["b_empty.txt"]
    for name in ("t01.txt", "t02.txt"):  # the chaos endpoint's answers may fail the rule: the rules rung then
        assert rows[name].split()[1] in {"model:small", "rules"} and '{"category":' in rows[name], rows[name]
    assert lines[6].startswith("total: 4 documents -> 2 outputs, 2 quarantined")
    assert "tokens" in result.stdout and "cost $" in result.stdout
    assert SECRET not in result.stdout + result.stderr  # document text is never printed, only output fields
    assert not out.exists()  # no output folder, sink, quarantine file or decision store


def test_try_shows_failed_checks(chaos: ChaosServer, tmp_path: Path) -> None:
    chaos.script.extend(
        [{"content": {"category": "technical", "priority": "low", "summary": "key sk-proj-abcdefghijklmnopqrstuvwxyz"}}]
    )
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "t.txt").write_text("The export page crashes with error 500 every time.")
    result = _try(
        chaos, "configs/support_triage.yaml", "--input", str(folder), "--set", f"run.output={tmp_path / 'out'}"
    )
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("t.txt")]
    assert "secrets:fix" in row and "[SECRET]" in row and "sk-proj" not in row


def test_try_a_broken_pipeline_exits_2_with_one_line_per_problem() -> None:
    result = _try(None, "tests/fixtures/invalid/unknown_model_in_ladder.yaml")
    assert result.returncode == 2 and "unknown model 'fats'" in result.stderr and "Traceback" not in result.stderr


def test_try_a_missing_input_exits_2(tmp_path: Path) -> None:
    result = _try(None, "configs/support_triage.yaml", "--input", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr


def test_try_an_unreachable_endpoint_quarantines_or_falls_back_and_exits_0(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "t.txt").write_text("I was charged twice, please refund.")
    cmd = [*CLI, "try", "configs/support_triage.yaml", "--input", str(folder), "--set", "models.small.provider=openai"]
    cmd += ["--set", "models.small.base_url=http://127.0.0.1:9/v1", "--set", "models.small.timeout_s=2"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("t.txt")]
    assert row.split()[1] in {"rules", "default", "default *"}, row


def _lines(process: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output lines, as they come (a thread reads them: a pipe's buffer hides them from select)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _read_until(lines: queue.Queue[str], marker: str, timeout_s: float = 120) -> list[str]:
    """Lines up to and including the first one containing ``marker``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"no {marker!r} in: {''.join(seen)[-2000:]}")


@pytest.mark.slow  # two turns of a whole watching process: the longest of these tests
def test_try_watch_runs_again_when_a_file_changes_and_keeps_watching_a_broken_pipeline(
    chaos: ChaosServer, tmp_path: Path
) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs, ignore=shutil.ignore_patterns("data"))
    folder = _folder(tmp_path)
    pipeline = configs / "support_triage.yaml"
    cmd = [*CLI, "try", str(pipeline), "--input", str(folder), "--limit", "3", "--watch"]
    cmd += ["--set", "models.small.provider=openai", "--set", f"models.small.base_url={chaos.base_url}"]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, reader = _lines(process)
    try:
        first = _read_until(lines, "watching")
        assert any(line.startswith("total: 3 documents") for line in first)
        prompt = configs / "prompts" / "triage.md"
        prompt.write_text(prompt.read_text() + "\nAnswer in English.\n")  # an edit to a file the pipeline reads
        second = _read_until(lines, "watching")
        assert any(line.startswith("total: 3 documents") for line in second)
        pipeline.write_text(pipeline.read_text().replace("max_chars: 8000", "max_chars: eight"))
        broken = _read_until(lines, "watching")
        assert any("max_chars: expected an integer" in line for line in broken), broken
        assert process.poll() is None  # a broken pipeline is told, and the loop goes on
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        reader.join(10)  # the rest of the output, up to the end of the pipe
    rest = "".join(lines.get() for _ in range(lines.qsize()))
    assert process.returncode == 130 and "Traceback" not in rest, rest  # Ctrl-C ends the loop, as typer exits on it
