"""Shared fixtures: a chaos endpoint on loopback and a real Prefect server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def chaos() -> Iterator[ChaosServer]:
    server = ChaosServer(ChaosConfig(seed=7, hang_s=5)).start()
    yield server
    server.stop()


def wait_http(url: str, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bytes(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start `prefect server start` once per session; yield the env that points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }  # the UI asks :4200 otherwise
    env.pop("PREFECT_API_URL", None)
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, env, home / "server.log", f"http://127.0.0.1:{port}/api/health"):
        yield {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_URL": f"http://127.0.0.1:{port}"}


@contextmanager
def serving(cmd: list[str], env: dict[str, str], log_path: Path, health: str) -> Iterator[None]:
    """A server started with ``cmd`` (its output in ``log_path``), ready once ``health`` answers; stopped after."""
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(health, 180)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def local_gguf() -> Path:
    """The default embedded model, assembled and verified in the user cache (as `steadyflow run` would)."""
    from steadyflow.providers.local_model import default_model

    return default_model()[0]


def host_children(parent: int) -> list[int]:
    """Local model server processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status and b"steadyflow.providers.llama_host" in cmdline:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has ended; whether it did within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run_stage(pipeline: Any, stage_id: str, docs: list[Any], concurrency: int = 4, **engine: Any) -> list[Any]:
    """Run one stage of ``pipeline`` over ``docs`` with a fresh engine; its decision records."""
    import asyncio

    from steadyflow.stages.engine import Engine

    async def go() -> list[Any]:
        runner = Engine.create(pipeline, "run", concurrency=concurrency, **engine)
        try:
            return await runner.run_stage(stage_id, docs)
        finally:
            await runner.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL: the one .ci/run started (STEADYFLOW_TEST_POSTGRES_URL), else one started here."""
    if os.environ.get("STEADYFLOW_TEST_POSTGRES_URL"):
        yield os.environ["STEADYFLOW_TEST_POSTGRES_URL"]
        return
    import tempfile

    folder = tempfile.mkdtemp(prefix="steadyflow-pg-")  # not under pytest's tmp: the postgres user must reach it
    script = str(ROOT / ".ci" / "postgres.sh")
    url = subprocess.run(
        [script, "start", folder, str(free_port())], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([script, "stop", folder], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", folder], check=False)


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the real PostgreSQL server (dropped afterwards): a test's own store."""
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def triage_pipeline(path: Path, name: str, base_url: str, extra: str = "") -> Path:
    """A one-AI-stage pipeline (category billing|technical) on an OpenAI-compatible endpoint.

    ``extra`` is appended YAML.
    """
    path.write_text(f"""
pipeline: {name}
models:
  m: {{provider: openai, base_url: "{base_url}"}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder: [{{model: m}}]
{extra}""")
    return path


def stop(process: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    """Ctrl-C a long-running command (serve, worker); kill it if it does not exit in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()


def batch_without_prefect(pipeline: Any, options: Any, concurrency: int = 8, stop_after: int | None = None) -> Any:
    """One run of the batch without Prefect (:func:`steadyflow.runner.batch.arun_local`); its summary.

    ``stop_after`` cuts the run off as soon as that many documents have finished (a crash mid-run: the run
    is not finished; the summary then holds what was done until the cut). The cut waits on that condition,
    never on a clock.
    """
    import asyncio

    from steadyflow.runner.batch import local_stages, process
    from steadyflow.runner.run import Run

    options.concurrency = options.concurrency or concurrency
    if stop_after is None:
        from steadyflow.runner.batch import run_local

        return run_local(pipeline, options)

    async def cut() -> Any:
        enough = asyncio.Event()
        watched = options.progress

        class _Cut:
            def start(self, total: int | None, skipped: int) -> None:
                if watched is not None:
                    watched.start(total, skipped)

            def update(self, summary: Any, finished: int) -> None:
                if watched is not None:
                    watched.update(summary, finished)
                if finished >= stop_after:
                    enough.set()

        options.progress = _Cut()
        with Run.open(pipeline, options) as run:
            engine = run.engine()
            batch = asyncio.ensure_future(process(run, local_stages(engine), engine))
            waiting = asyncio.ensure_future(enough.wait())
            await asyncio.wait({batch, waiting}, return_when=asyncio.FIRST_COMPLETED)
            assert not batch.done(), "the batch ended before the cut"
            batch.cancel()
            waiting.cancel()
            await asyncio.gather(batch, waiting, return_exceptions=True)
            return run.summary

    return asyncio.run(cut())


@pytest.fixture(autouse=True)
def undo_registrations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Undo what a test registers: plugin checks, estimators, stage kinds, its ``sys.path`` and the modules it wrote.

    A plugin module a test writes and imports (``plugins: [my_checks]``) is forgotten too, so the
    next test that imports a module of that name runs it again and registers again.
    """
    from contextlib import ExitStack
    from types import ModuleType

    import steadyflow.stages.kinds
    import steadyflow.stages.routing
    import steadyflow.validators.base
    from steadyflow.core.registry import Registry

    modules: list[ModuleType] = [steadyflow.validators.base, steadyflow.stages.routing, steadyflow.stages.kinds]
    temp = str(tmp_path_factory.getbasetemp())
    path, imported = list(sys.path), set(sys.modules)
    with ExitStack() as stack:
        for registry in [value for module in modules for value in vars(module).values() if isinstance(value, Registry)]:
            stack.enter_context(registry.scoped())
        yield
    sys.path[:] = path
    for name in set(sys.modules) - imported:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(temp):
            del sys.modules[name]


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its examples and caches under the system's temporary folder, not in the repository.

    Runs started outside a test (session fixtures) keep their audit trail in a temporary folder, never the user's.
    """
    import tempfile

    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "steadyflow-hypothesis"))
    os.environ["STEADYFLOW_DATA_DIR"] = tempfile.mkdtemp(prefix="steadyflow-data-")
    for name in ("STEADYFLOW_AUDIT_URL", "STEADYFLOW_AUDIT_SIGNING_KEY", "STEADYFLOW_ACTOR"):
        os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def audit_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's runs keep their audit trail in a store of the test's own (``$STEADYFLOW_AUDIT_URL``)."""
    path = tmp_path / "audit-store" / "audit.sqlite"
    monkeypatch.setenv("STEADYFLOW_AUDIT_URL", f"sqlite:///{path}")
    return path


def prefect_post(api: str, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` to the Prefect REST API at ``api`` (``prefect_env["PREFECT_API_URL"]``); the decoded answer."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{api}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")
