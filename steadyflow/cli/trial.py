"""``steadyflow try``: the inner loop. A few documents through the pipeline, without Prefect, nothing written.

Each document goes through :meth:`steadyflow.api.Pipeline.process` (the same sandwich a run uses);
the table shows what came out, the rung that ended it, the checks that failed and what it cost.
Decision records stay in memory; no output folder, sink, quarantine file or store is touched.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from steadyflow.cli import EXIT_INVALID, app, load_with_source

if TYPE_CHECKING:
    from steadyflow.api import Pipeline, Processed
    from steadyflow.core.document import Document

_ID_WIDTH, _RUNG_WIDTH, _CHECKS_WIDTH = 18, 14, 22


@app.command("try")
def try_(
    file: Annotated[Path, typer.Argument(help="pipeline file")],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="folder, glob, .jsonl or .csv; replaces the pipeline's source")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="documents to try (the first N)")] = 3,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a value: dotted.key=value (repeatable)")
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="try again whenever a file in the pipeline's folder (or --input) changes, until Ctrl-C; "
            "libraries stay loaded, so a turn after the first takes about the documents' own time",
        ),
    ] = False,
) -> None:
    """Try a pipeline on a few documents without Prefect and without writing anything; print a table."""
    if not watch:
        _once(file, input, limit, set_)
        return
    while True:  # Ctrl-C ends it (main() prints "interrupted")
        before = _snapshot(file, input)
        with contextlib.suppress(typer.Exit):  # its problem is printed: fix the file, save, and it runs again
            _once(file, input, limit, set_)
        typer.echo(f"watching {file.parent} for changes (Ctrl-C stops)", err=True)
        while _snapshot(file, input) == before:
            time.sleep(_WATCH_INTERVAL_S)


_WATCH_INTERVAL_S = 0.5
_WATCH_MAX_FILES = 5000


def _snapshot(file: Path, input: str | None) -> dict[str, int]:
    """Modification times of the files a turn reads: the pipeline's folder (prompts, rules) and --input."""
    import os

    roots = [file.resolve().parent] + ([Path(input)] if input is not None and Path(input).exists() else [])
    seen: dict[str, int] = {}
    for root in roots:
        if root.is_file():
            seen[str(root)] = root.stat().st_mtime_ns
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]  # not a repository's .git
            for name in names:
                path = os.path.join(folder, name)
                try:
                    seen[path] = os.stat(path).st_mtime_ns
                except OSError:  # gone between the listing and the stat
                    continue
                if len(seen) >= _WATCH_MAX_FILES:
                    return seen
    return seen


def _once(file: Path, input: str | None, limit: int, set_: list[str] | None) -> None:
    """One turn: load and check the pipeline, run its first documents, print the table."""
    loaded = load_with_source(file, set_, input)
    if input is not None and not Path(input).exists() and "*" not in input:
        typer.echo(f"--input {input}: no such file or folder", err=True)
        raise typer.Exit(EXIT_INVALID)
    import asyncio  # here, not at the top: --help and validate import this module and need no event loop

    from steadyflow.api import Pipeline
    from steadyflow.providers.local_model import LocalModelError

    pipeline = Pipeline(loaded, set_ or [], check_workers=0)  # a few documents: workers would only add start-up
    try:
        docs = _first(pipeline, input, limit)
        asyncio.run(_try(pipeline, docs))
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None


def _first(pipeline: Pipeline, input: str | None, limit: int) -> list[Document]:
    """The first ``limit`` documents of the source (or ``--input``), read as a run reads them."""
    from steadyflow.io.sources import read_documents, source_for

    if input is not None:
        spec, base = source_for(input), Path.cwd()
    elif pipeline.loaded.spec.source is not None:
        spec, base = pipeline.loaded.spec.source, pipeline.loaded.base_dir
    else:  # load_with_source refused it already
        raise typer.Exit(EXIT_INVALID)
    reader = read_documents(spec, base)
    try:
        return list(itertools.islice(reader, limit))
    finally:
        if isinstance(reader, Generator):
            reader.close()  # releases what the reader holds open (a PDF worker)


async def _try(pipeline: Pipeline, docs: list[Document]) -> None:
    import asyncio

    started = time.perf_counter()
    typer.echo(
        f"try {pipeline.name} {pipeline.version}: {len(docs)} documents, stages {' -> '.join(pipeline.stages)} "
        "(no Prefect, nothing written)"
    )
    # on a terminal the row fits its width; in a log or a pipe the output is cut only when very long
    columns = shutil.get_terminal_size().columns if sys.stdout.isatty() else 480
    output_width = max(30, columns - _ID_WIDTH - _RUNG_WIDTH - _CHECKS_WIDTH - 22)
    typer.echo(
        f"{'id':{_ID_WIDTH}} {'ended by':{_RUNG_WIDTH}} {'failed checks':{_CHECKS_WIDTH}} {'tokens':>7} "
        f"{'USD':>10}  output"
    )
    results: list[Processed] = []
    tasks = [asyncio.ensure_future(pipeline.process(doc)) for doc in docs]
    try:
        for task in tasks:  # in input order, each as soon as it and those before it are done
            result = await task
            results.append(result)
            typer.echo(_row(result, output_width))
    finally:
        for task in tasks:  # after a failure of all (a local model that cannot start): none left running
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.aclose()
    _totals(results, time.perf_counter() - started)


def _row(result: Processed, output_width: int) -> str:
    from steadyflow.io.limits import printable

    rung = result.rung + (" *" if result.review else "")
    checks = _failed_checks(result) or "-"
    if result.output is not None:
        shown = printable(json.dumps(result.output, ensure_ascii=False, separators=(",", ":")))
    else:  # a quarantine reason names checks, limits and fields: never document text
        shown = printable(f"({result.stage}: {result.reason})")
    return (
        f"{_cut(printable(result.id), _ID_WIDTH):{_ID_WIDTH}} {_cut(rung, _RUNG_WIDTH):{_RUNG_WIDTH}} "
        f"{_cut(checks, _CHECKS_WIDTH):{_CHECKS_WIDTH}} {result.tokens:>7} {result.cost_usd:>10.6f}  "
        f"{_cut(shown, output_width)}"
    )


def _failed_checks(result: Processed) -> str:
    """Failed verdicts as 'check:action', counted ('rule:reask x2'), over every stage of the document."""
    counts = Counter(f"{v.check}:{v.action}" for r in result.records for v in r.verdicts if not v.passed)
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _totals(results: list[Processed], seconds: float) -> None:
    outputs = sum(1 for r in results if not r.quarantined)
    review = sum(1 for r in results if r.review and not r.quarantined)
    by_rung = Counter(r.rung for r in results)
    checks = Counter(f"{v.check}:{v.action}" for p in results for r in p.records for v in r.verdicts if not v.passed)
    typer.echo(
        f"total: {len(results)} documents -> {outputs} outputs, {len(results) - outputs} quarantined, "
        f"{review} for review (*); " + ", ".join(f"{rung} {n}" for rung, n in sorted(by_rung.items()))
    )
    if checks:
        typer.echo("  checks failed: " + ", ".join(f"{name} {n}" for name, n in sorted(checks.items())))
    tokens = sum(r.tokens for r in results)
    typer.echo(f"  tokens {tokens}, cost ${sum(r.cost_usd for r in results):.6f}, {seconds:.1f}s")
