"""Who runs a pipeline and under which policy, and the run's side of the audit trail.

The actor is ``--actor``, else ``$STEADYFLOW_ACTOR``, else the login and host (``user@host``), with the
Prefect flow run and deployment when a schedule started the run. The policy in force is a hash of the
pipeline as loaded (``--set`` overrides included), the git commit of the pipeline's repository and
whether its files differ from it, and the SHA-256 of the pipeline, prompt, rules and plugin files.

:class:`RunTrail` writes a run's records to the audit store (:mod:`steadyflow.audit.trail`): the run's
start, each decision (buffered, and written before the ledger marks its document completed, so a
completed document always has its audit record), the run's end, and its retention.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_errors

from steadyflow.audit.chain import AuditError, load_signer
from steadyflow.audit.entries import RunContext, decision_entry, run_end_entry, run_entry
from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.trail import AuditStore, Entry, iso
from steadyflow.io.limits import printable
from steadyflow.io.sinks import SinkError, expand_url, shown_url, sqlite_file
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import AiStage, RulesRung, RulesStage
from steadyflow.spec.snapshot import snapshot, snapshot_hash

ACTOR_ENV = "STEADYFLOW_ACTOR"
URL_ENV = "STEADYFLOW_AUDIT_URL"
KEY_ENV = "STEADYFLOW_AUDIT_SIGNING_KEY"
MAX_ACTOR = 200
GIT_TIMEOUT_S = 10.0
_MAX_FILE_BYTES = 10_000_000


def data_dir() -> Path:
    """``$STEADYFLOW_DATA_DIR``, else ``$XDG_DATA_HOME/steadyflow``, else ``~/.local/share/steadyflow``."""
    if explicit := os.environ.get("STEADYFLOW_DATA_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "steadyflow"


def store_url(given: str | None, base_dir: Path) -> str:
    """The audit store's URL, expanded: ``given``, else ``$STEADYFLOW_AUDIT_URL``, else ``<data_dir>/audit.sqlite``.

    ``given`` is a pipeline's ``audit.url`` or ``--store``. ``${NAME}`` is filled from the environment;
    a relative SQLite path is relative to ``base_dir``.
    """
    url = given or os.environ.get(URL_ENV) or f"sqlite:///{data_dir() / 'audit.sqlite'}"
    try:
        return expand_url(url, base_dir)
    except SinkError as exc:
        raise AuditError(str(exc).replace("sink url", "audit store url")) from None


def open_store(given: str | None, base_dir: Path, *, sign: bool = True, create: bool = True) -> AuditStore:
    """Open the audit store (see :func:`store_url`), signing with ``$STEADYFLOW_AUDIT_SIGNING_KEY`` if ``sign`` and set.

    ``create``: make the store (and a SQLite file's folder) when missing; else a missing store is an
    :class:`~steadyflow.audit.chain.AuditError`.
    """
    url = store_url(given, base_dir)
    shown = shown_store(url)
    if (path := sqlite_file(url)) is not None:
        if not create and not path.is_file():
            raise AuditError(f"no audit store at {path} (runs create it; give --store or --pipeline)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"audit store {shown}: cannot create its folder ({exc.strerror})") from None
    key = os.environ.get(KEY_ENV) if sign else None
    return AuditStore(url, shown, load_signer(Path(key)) if key else None, create=create)


def shown_store(url: str) -> str:
    """An audit store's URL without its password, for messages and records."""
    try:
        return shown_url(url)
    except (ValueError, sa_errors.ArgumentError):  # a URL SQLAlchemy cannot parse: show only its scheme
        return url.split(":", 1)[0] + "://..."


def actor(given: str | None, flow_run: str | None = None, deployment: str | None = None) -> dict[str, Any]:
    """Who runs it: ``given`` (``--actor``), else ``$STEADYFLOW_ACTOR``, else ``user@host``; and what scheduled it."""
    if given:
        name, via = given, "option"
    elif os.environ.get(ACTOR_ENV):
        name, via = os.environ[ACTOR_ENV], ACTOR_ENV
    else:
        name, via = f"{_login()}@{socket.gethostname()}", "login"
    name = printable(name.strip())[:MAX_ACTOR]
    found: dict[str, Any] = {"name": name, "via": via}
    if flow_run:
        found["prefect_flow_run"] = flow_run
    if deployment:
        found["prefect_deployment"] = deployment
    return found


def check_actor(given: str) -> str | None:
    """Why ``--actor`` cannot name anyone (empty, control characters, too long), or None."""
    if not given.strip():
        return "--actor is empty"
    if printable(given) != given:
        return "--actor has control characters (one line, please)"
    if len(given) > MAX_ACTOR:
        return f"--actor is longer than {MAX_ACTOR} characters"
    return None


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry
        return f"uid{os.getuid()}"


def policy_files(pipeline: LoadedPipeline) -> dict[str, Path]:
    """The files that decide the pipeline's outputs, by their path relative to its folder (the file itself first)."""
    base = pipeline.base_dir
    names = [pipeline.path.name]
    for stage in pipeline.spec.stages:
        if isinstance(stage, AiStage):
            if stage.prompt.file:
                names.append(stage.prompt.file)
            names += [
                rung.rules for rung in stage.ladder if isinstance(rung, RulesRung) and isinstance(rung.rules, str)
            ]
        elif isinstance(stage, RulesStage) and isinstance(stage.rules, str):
            names.append(stage.rules)
    for module in pipeline.spec.plugins:
        candidate = module.replace(".", "/") + ".py"
        if (base / candidate).is_file():
            names.append(candidate)
    return {name: base / name for name in dict.fromkeys(names)}


def _file_hash(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            digest.update(handle.read(_MAX_FILE_BYTES + 1))
    except OSError:
        return None
    return digest.hexdigest()


def git_state(folder: Path, files: list[Path]) -> dict[str, Any] | None:
    """The git commit of ``folder``'s repository and whether it is dirty; None outside a repository or without git.

    Dirty: tracked changes anywhere, or one of ``files`` never committed. Bounded in time, never raises.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    # a repository's own config must not run anything here (core.fsmonitor is a command)
    base = ["git", "-c", "core.fsmonitor=false", "-C", str(folder)]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                [*base, *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, env=env, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    if not commit:
        return None
    tracked = git("status", "--porcelain", "--untracked-files=no")
    untracked = git("ls-files", "--others", "--", *[str(path) for path in files])
    dirty = None if tracked is None or untracked is None else bool(tracked.strip() or untracked.strip())
    return {"commit": commit.strip(), "dirty": dirty}


def policy(pipeline: LoadedPipeline) -> dict[str, Any]:
    """The policy in force: hashes of the loaded pipeline and its files, and its repository's commit."""
    version = snapshot(pipeline)
    files = policy_files(pipeline)
    hashes = {name: _file_hash(path) for name, path in files.items()}
    loaded = json.dumps(
        {"spec": pipeline.spec.model_dump(mode="json"), "snapshot": version}, sort_keys=True, ensure_ascii=False
    )
    return {
        "hash": hashlib.sha256(loaded.encode("utf-8", "surrogatepass")).hexdigest(),
        "snapshot": snapshot_hash(version),
        "git": git_state(pipeline.base_dir, list(files.values())),
        "files": hashes,
    }


class RunTrail:
    """One run's records in the audit store; decisions are buffered and written by :meth:`flush`."""

    def __init__(self, store: AuditStore, context: RunContext, retention_days: int | None) -> None:
        self.store = store
        self.context = context
        self.retention_days = retention_days
        self._pending: list[Entry] = []
        self.head: tuple[int, str] | None = None
        """The chain's head after this run's last write (kept in its summary: a copy of the head elsewhere)."""

    def start(self, source: dict[str, Any] | None, resumed: bool) -> None:
        """Record the run starting, and keep its pipeline's retention."""
        self.store.set_retention(self.context.pipeline, self.retention_days, self.context.actor["name"])
        key_id = self.store.signer.key_id if self.store.signer else None
        self.head = self.store.append([run_entry(self.context, source, resumed, key_id)])

    def add(self, records: list[DecisionRecord]) -> None:
        """Hold decision records until the next :meth:`flush` (a chunk completing)."""
        self._pending += [decision_entry(r, self.store.key(r.doc_id), self.context) for r in records]

    def flush(self) -> None:
        """Write the held records in one transaction."""
        if self._pending:
            self.head = self.store.append(self._pending)
            self._pending = []

    def finish(self, totals: dict[str, Any]) -> None:
        """Write what is held and the run's end; then purge what the store's retention lets go."""
        self._pending.append(run_end_entry(self.context, {**totals, "finished_at": iso(time.time())}))
        self.flush()
        if self.store.purge_expired(self.context.actor["name"]) is not None:
            self.head = self.store.head()  # the purge's own record is the newest link now

    def close(self) -> None:
        """Release the store (held records of documents not completed are not written: a resume decides them)."""
        self.store.close()


def open_trail(
    pipeline: LoadedPipeline, run_id: str, given_actor: str | None, flow_run_id: str | None, deployment: str | None
) -> RunTrail | None:
    """A run's side of the audit store (None when the pipeline says ``audit: {enabled: false}``)."""
    settings = pipeline.spec.audit
    if not settings.enabled:
        return None
    store = open_store(settings.url, pipeline.base_dir)
    try:
        spec = pipeline.spec
        who = actor(given_actor, flow_run_id, deployment)
        context = RunContext(run_id, spec.pipeline, spec.version, who, policy(pipeline))
    except BaseException:
        store.close()
        raise
    return RunTrail(store, context, settings.retention_days)
