"""Lifecycle of the llama-cpp-python servers behind ``provider: local``.

A run starts one server per distinct GGUF (shared by every stage and document
of the run) on a free loopback port, waits until it answers, and stops it when
the run ends. The server watches a pipe from the run (see
:mod:`steadyflow.providers.llama_host`), so it also ends when the run is killed.

``steadyflow local-model serve`` starts a detached server and records it in
``<cache>/server.json``; runs reuse it instead of starting their own, and leave
it running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from steadyflow.providers.local_model import LocalModelError, cache_dir, check_gguf, default_model
from steadyflow.spec.models import ModelSpec

DEFAULT_CONTEXT = 4096
READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ServerInfo:
    """A running server: what ``server.json`` holds for a served one."""

    pid: int
    base_url: str
    model_path: str
    context_tokens: int


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(base_url: str, timeout_s: float = 2.0) -> bool:
    """Whether an OpenAI-compatible server answers ``GET /models`` at ``base_url``."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as response:
            return int(response.status) == 200
    except (OSError, ValueError):
        return False


def resolve_model(spec: ModelSpec) -> tuple[Path, str]:
    """The GGUF a local model spec runs, verified; and a note of what was done to get it."""
    if spec.model_path:
        path = check_gguf(Path(spec.model_path).expanduser(), spec.model_sha256)
        return path.resolve(), "user model"
    return default_model()


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def server_count(spec: ModelSpec | None = None) -> int:
    """How many single-request model servers serve a local model (``servers``, else 2 where there are 2 cores).

    Two servers of one thread answer about 1.5x the documents per second of one server of two threads
    on two cores (``benchmarks/local_speed.py``): the threads of one small model wait on each other
    for every token.
    """
    if spec is not None and spec.servers:
        return spec.servers
    return min(2, cores())


def _host_command(
    model: Path, port: int, context_tokens: int, watch_stdin: bool, logprobs: bool = True, servers: int = 1
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.providers.llama_host",
        "--model",
        str(model),
        "--port",
        str(port),
        "--n-ctx",
        str(context_tokens),
    ]
    cmd += ["--logits-all"] if logprobs else []
    cmd += ["--workers", str(servers), "--threads", str(max(cores(), servers))] if servers > 1 else []
    return [*cmd, "--watch-stdin"] if watch_stdin else cmd


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers(base_url, timeout_s=1.0):
        if proc.poll() is not None:
            raise LocalModelError(
                f"the local model server exited with code {proc.returncode} before answering:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            _stop(proc)
            raise LocalModelError(
                f"the local model server did not answer within {READY_TIMEOUT_S:.0f} s:\n{_tail(log)}"
            )
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the server's watchdog exits on EOF
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log_path(model: Path) -> Path:
    folder = cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"server-{model.stem}-{os.getpid()}.log"


class RunServer:
    """A server owned by one run: started in ``__enter__``, stopped in ``__exit__`` or when the run dies."""

    def __init__(
        self, model: Path, context_tokens: int = DEFAULT_CONTEXT, logprobs: bool = False, servers: int = 1
    ) -> None:
        self.model = model
        self.context_tokens = context_tokens
        self.logprobs = logprobs
        """Whether the server computes token log-probabilities (logits for every token: slower, more memory)."""
        self.servers = servers
        """Servers behind the one port (``llama_host --workers``), one request each."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = _log_path(model)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc else None

    def __enter__(self) -> RunServer:
        self._log_handle = self.log.open("wb")
        # its own session: Ctrl-C reaches the run, which then stops the server in order
        self._proc = subprocess.Popen(
            _host_command(
                self.model, self.port, self.context_tokens, True, logprobs=self.logprobs, servers=self.servers
            ),
            stdin=subprocess.PIPE,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(self._proc, self.base_url, self.log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.log.unlink(missing_ok=True)


# --- a served (detached) server, shared by runs --------------------------------------------------


def _state_file() -> Path:
    return cache_dir() / "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def served() -> ServerInfo | None:
    """The server that ``local-model serve`` started, if it still runs and answers."""
    try:
        info = ServerInfo(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(info.pid) and answers(info.base_url):
        return info
    return None


def serve(model: Path, context_tokens: int = DEFAULT_CONTEXT, port: int | None = None) -> ServerInfo:
    """Start a detached server for ``model`` and record it; return the running one if it already serves."""
    current = served()
    if current is not None:
        if current.model_path == str(model) and current.context_tokens >= context_tokens:
            return current
        raise LocalModelError(
            f"a local model server already runs (pid {current.pid}, {current.model_path}): stop it first"
        )
    port = port or free_port()
    log = cache_dir() / "logs" / "served.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            _host_command(model, port, context_tokens, watch_stdin=False, servers=server_count()),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    info = ServerInfo(
        pid=proc.pid, base_url=f"http://127.0.0.1:{port}/v1", model_path=str(model), context_tokens=context_tokens
    )
    _wait_ready(proc, info.base_url, log)
    _state_file().write_text(json.dumps(asdict(info)))
    return info


def stop_served(timeout_s: float = 15.0) -> ServerInfo | None:
    """Stop the served server, if any; return what was stopped."""
    info = served()
    _state_file().unlink(missing_ok=True)
    if info is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(info.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)  # reap it when this process started it
        time.sleep(0.1)
    if _alive(info.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)
    return info


# --- what a run needs -----------------------------------------------------------------------------


class LocalEndpoints:
    """Base URLs for a run's local models: a served server when it fits, else servers the run owns.

    ``with LocalEndpoints(models) as urls:`` gives ``{model name: base_url}``
    for every ``provider: local`` model without a ``base_url`` of its own. A server the run starts
    computes token log-probabilities only if a model in ``logprobs`` runs on it (a served one always does).
    """

    def __init__(self, models: dict[str, ModelSpec], logprobs: Collection[str] = ()) -> None:
        self.models = {name: spec for name, spec in models.items() if spec.provider == "local" and not spec.base_url}
        self.logprobs = set(logprobs)
        self.notes: list[str] = []
        #: the GGUF file each model runs, by name: what decision records call the model
        self.model_ids: dict[str, str] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        started: dict[tuple[Path, int], str] = {}
        current = served()
        try:
            resolved = {name: resolve_model(spec) for name, spec in self.models.items()}
            wanted = {
                (resolved[n][0], self.models[n].context_tokens or DEFAULT_CONTEXT)
                for n in self.logprobs & set(resolved)
            }
            servers: dict[tuple[Path, int], int] = {}
            for name, spec in self.models.items():
                key = (resolved[name][0], spec.context_tokens or DEFAULT_CONTEXT)
                servers[key] = max(servers.get(key, 1), server_count(spec))
            for name, spec in self.models.items():
                path, note = resolved[name]
                self.model_ids[name] = path.name
                context = spec.context_tokens or DEFAULT_CONTEXT
                if current and current.model_path == str(path) and current.context_tokens >= context:
                    urls[name] = current.base_url
                    self.notes.append(f"{name}: reusing the served local model at {current.base_url}")
                    continue
                if (path, context) not in started:
                    key = (path, context)
                    server = self._stack.enter_context(RunServer(path, context, key in wanted, servers[key]))
                    started[(path, context)] = server.base_url
                    self.notes.append(f"{name}: {note}; started a local model server at {server.base_url}")
                urls[name] = started[(path, context)]
        except BaseException:
            self._stack.close()
            raise
        return urls

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stack.close()
