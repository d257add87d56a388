"""Where a run writes, and the rules that keep runs from destroying each other's data.

* The **output folder** is ``--output``, else the pipeline's ``run.output``, else the
  folder of the file sink's path (next to the pipeline file). It holds the run's own
  files (``decisions.sqlite``, ``runs.sqlite``, ``quarantine.jsonl``, the lock), which no sink may name.
* One run at a time owns a folder (see :mod:`steadyflow.io.lock`), and a SQLite or
  PostgreSQL sink outside it.
* A new run never truncates a file another run still needs: a sink file that belongs to
  an unfinished run, or to no run recorded in the folder, is refused unless the user says
  ``--overwrite``. A resume checks the file is still the one it wrote (length and SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steadyflow.audit.ledger import LEDGER_NAME, Mark, RunLedger, read_ledger
from steadyflow.audit.log import LOG_NAME
from steadyflow.io.lock import RunLock
from steadyflow.io.sinks import FileRows, RowSink, SinkError, SqlRows, expand_url, shown_url, sqlite_file
from steadyflow.spec.models import RUN_FILES, FileSink, Pipeline, SqlSink

QUARANTINE_NAME = "quarantine.jsonl"


def output_folder(spec: Pipeline, base_dir: Path, output: str | None) -> Path:
    """The folder of outputs, quarantine, the decision log and the run ledger."""
    if output:
        return Path(output)
    if spec.run.output:
        return base_dir / spec.run.output
    if isinstance(spec.sink, FileSink) and not spec.sink.outside_output:
        return (base_dir / spec.sink.path).parent
    return base_dir / "out"


def sink_spec(spec: Pipeline) -> FileSink | SqlSink:
    """The pipeline's sink, or a JSONL file named after the pipeline."""
    return spec.sink or FileSink(kind="jsonl", path=f"{spec.pipeline}.jsonl")


def _file_sink_path(spec: FileSink, folder: Path, base_dir: Path) -> Path:
    if spec.outside_output:
        return base_dir / spec.path  # an absolute path stays as it is
    return folder / Path(spec.path).name


def _file_targets(spec: FileSink, folder: Path, base_dir: Path) -> tuple[Path, Path]:
    """(sink file, quarantine file), once the folder's own files, the run's file names and links are checked."""
    path = _file_sink_path(spec, folder, base_dir)
    check_run_files(folder)
    _check_not_run_file(path, folder)
    _check_no_link(path, spec)
    return path, folder / QUARANTINE_NAME


def check_run_files(folder: Path) -> None:
    """Refuse an output folder whose own files are symbolic links.

    A linked ``decisions.sqlite``, ``runs.sqlite`` or ``quarantine.jsonl`` would let this run write into
    another folder's files while that folder's run holds its own lock.
    """
    for name in RUN_FILES:
        if (folder / name).is_symlink():
            raise SinkError(
                f"{folder / name} is a symbolic link; a run does not write its own files through links "
                "(it could reach another run's): remove it"
            )


def _check_no_link(path: Path, spec: FileSink) -> None:
    if path.is_symlink() and not spec.outside_output:
        raise SinkError(
            f"{path} is a symbolic link; a sink is not written through links (it could reach another run's "
            "files): remove it, or name the real file with outside_output: true"
        )


def _check_not_run_file(path: Path, folder: Path) -> None:
    resolved = path.resolve()
    for name in RUN_FILES:
        if resolved == (folder / name).resolve():
            raise SinkError(f"sink {path} would overwrite the run's own {name}; give the sink another name")


@dataclass
class OpenSinks:
    """The run's outputs and quarantine, where they go, and the locks held for sinks outside the folder."""

    outputs: RowSink
    quarantine: RowSink
    output_path: str
    quarantine_path: str
    locks: list[RunLock] = field(default_factory=list)

    def close(self) -> None:
        """Close both sinks and release their locks."""
        for sink in (self.outputs, self.quarantine):
            sink.close()
        for lock in self.locks:
            lock.release()


def _refusal(path: Path, ledger: RunLedger, run_id: str, resume: bool, overwrite: bool) -> str | None:
    """Why this run may not write the file sink at ``path`` (see the module docstring), or None."""
    owner = ledger.sink_owner(path)
    if resume:
        if path.exists() and owner not in (None, run_id):
            return (
                f"{path} was replaced by run {owner} since this run wrote it; "
                "resuming would lose its data: start a new run"
            )
        return None
    if overwrite or not path.exists() or path.stat().st_size == 0:
        return None
    if owner is None:
        return (
            f"{path} exists and was not written by a run recorded in {ledger.path}; "
            "move it away, choose another --output, or pass --overwrite"
        )
    info = ledger.run_info(owner)
    if owner != run_id and info is not None and info["finished_at"] is None:
        return (
            f"{path} holds the outputs of run {owner}, which did not finish; resume it with --resume {owner}, "
            "choose another --output, or pass --overwrite to discard them"
        )
    return None


def check_file_sinks(
    spec: FileSink | SqlSink, folder: Path, base_dir: Path, run_id: str, resume: bool, overwrite: bool
) -> None:
    """Raise :class:`SinkError` now if opening the file sinks would be refused (before a slow start-up).

    Writes nothing.
    """
    if isinstance(spec, SqlSink):
        check_run_files(folder)
        return  # rows keyed by run: a table is never truncated
    targets = _file_targets(spec, folder, base_dir)
    ledger = read_ledger(folder / LOG_NAME)
    if ledger is None:
        if not overwrite and not resume and (taken := [t for t in targets if t.exists() and t.stat().st_size > 0]):
            raise SinkError(
                f"{taken[0]} exists and was not written by a run recorded in {folder / LEDGER_NAME}; "
                "move it away, choose another --output, or pass --overwrite"
            )
        return
    try:
        for target in targets:
            if (why := _refusal(target, ledger, run_id, resume, overwrite)) is not None:
                raise SinkError(why)
    finally:
        ledger.close()


def _claim(path: Path, ledger: RunLedger, run_id: str, resume: bool, overwrite: bool) -> None:
    if (why := _refusal(path, ledger, run_id, resume, overwrite)) is not None:
        raise SinkError(why)
    ledger.claim_sink(path, run_id)


def _open_sql(spec: SqlSink, folder: Path, run_id: str, ledger: RunLedger) -> OpenSinks:
    url = expand_url(spec.url, folder)
    locks: list[RunLock] = []
    database = sqlite_file(url)
    if database is not None:
        _check_not_run_file(database, folder)
        if database.resolve() in ((folder / LOG_NAME).resolve(), ledger.path.resolve()):
            raise SinkError(f"sink {database} is one of the run's own files; give the sink another database")
        real = database.resolve()
        if real.parent != folder.resolve():  # inside the folder, the folder's lock covers it
            locks.append(RunLock(real.with_name(real.name + ".lock"), f"sink {database}").acquire(run_id))
    try:
        outputs = SqlRows(url, spec.table, run_id)
        quarantine = SqlRows(url, f"{spec.table}_quarantine", run_id, quarantine=True)
    except SinkError:
        for lock in locks:
            lock.release()
        raise
    where = shown_url(url)
    return OpenSinks(
        outputs, quarantine, f"{where} table {spec.table}", f"{where} table {spec.table}_quarantine", locks
    )


def open_sinks(
    spec: FileSink | SqlSink,
    folder: Path,
    base_dir: Path,
    run_id: str,
    ledger: RunLedger,
    marks: dict[str, Mark] | None,
    overwrite: bool = False,
) -> OpenSinks:
    """Open a run's sinks; ``marks`` (a resume) cut file sinks back to what the run recorded."""
    resume = marks is not None
    if isinstance(spec, SqlSink):
        return _open_sql(spec, folder, run_id, ledger)
    path, quarantine_path = _file_targets(spec, folder, base_dir)
    locks: list[RunLock] = []
    real = path.resolve()
    if real.parent != folder.resolve():  # outside the folder (outside_output, maybe through a link): lock the real file
        locks.append(RunLock(real.with_name(real.name + ".lock"), f"sink {path}").acquire(run_id))
    try:
        for target in (path, quarantine_path):
            _claim(target, ledger, run_id, resume, overwrite)
        out = FileRows(path, spec.kind, (marks or {}).get("outputs", (0, "")) if resume else None)
        try:
            held = FileRows(quarantine_path, "jsonl", (marks or {}).get("quarantine", (0, "")) if resume else None)
        except BaseException:
            out.close()
            raise
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return OpenSinks(out, held, str(path), str(quarantine_path), locks)
