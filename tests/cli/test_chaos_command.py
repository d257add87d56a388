"""`steadyflow chaos serve` from the shell: a free port on request, one line on a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

from tests.conftest import ROOT


def test_port_zero_picks_a_free_port_and_says_which() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "steadyflow.cli", "chaos", "serve", "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("chaos endpoint on http://127.0.0.1:") and ":0/" not in line
        url = line.split()[3]
        with urllib.request.urlopen(url + "/models", timeout=5) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(10)


def test_a_busy_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "steadyflow.cli", "chaos", "serve", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"cannot listen on 127.0.0.1:{port}: Address already in use; --port 0 picks a free port"
    ]
