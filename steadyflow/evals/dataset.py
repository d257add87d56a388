"""Labelled datasets: documents with the outputs a pipeline should give them.

JSONL, one example per line::

    {"id": "t01", "text": "Subject: ...", "expected": {"triage": {"category": "billing"}}, "tags": ["pii"]}

``text`` (or ``body``) is the document; every other key except ``expected`` and ``tags`` is a
document field, as in a JSONL source. ``expected`` maps stage ids to ``{field: value}``; with one
stage to score, ``{"category": "billing"}`` is short for it. A first line
``{"scorers": {"triage.summary": "fuzzy:0.8"}}`` declares scorers (see
:mod:`steadyflow.evals.scorers`) that take precedence over the pipeline's ``eval:`` section.

CSV: columns ``id``, ``text``, ``tags`` (``;``-separated), ``expected.FIELD`` or
``expected.STAGE.FIELD``; other columns are document fields. A label cell that reads as JSON (a
number, ``true``, a list) is that value, any other label cell a string; an empty or missing cell is
no label.

JSON is read within the bounds of a JSONL source (:mod:`steadyflow.io.limits`): nesting, integer
digits, no NaN, no lone surrogates.

Labels are never shown to the pipeline: they are taken out of the document before it runs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyflow.io.formats import Refused, json_or_text, parse_json
from steadyflow.io.limits import LIMITS, MIB, printable

MAX_DATASET_BYTES = 256 * MIB
MAX_EXAMPLES = 1_000_000
_RESERVED = ("expected", "tags")


class DatasetError(Exception):
    """A dataset that cannot be used: one line, ``path:line: what is wrong``."""


@dataclass(frozen=True)
class Example:
    """One labelled document."""

    id: str
    document: dict[str, Any]
    """What the pipeline is given: ``id``, ``text`` and any other fields; never the labels."""
    expected: dict[str, dict[str, Any]]
    """Expected outputs by stage id, then field (a dotted name for a nested field)."""
    tags: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A labelled dataset as read from its file."""

    path: Path
    examples: list[Example]
    scorers: dict[str, str] = field(default_factory=dict)
    """Scorers the dataset declares, by ``stage.field``."""


def load_dataset(path: Path, stages: list[str], stage: str | None = None) -> Dataset:
    """Read ``path`` (.jsonl or .csv) for a pipeline whose stage ids are ``stages``.

    ``stage`` is the stage a flat ``expected`` belongs to (default: the last one). Raises
    :class:`DatasetError` on the first problem, naming the line; never quotes document text.
    """
    default = stage or stages[-1]
    try:
        size = path.stat().st_size
        if size > MAX_DATASET_BYTES:
            raise DatasetError(f"{path}: {size} bytes, over the {MAX_DATASET_BYTES // MIB} MiB a dataset may have")
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the dataset ({exc.strerror or type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 (byte {exc.start})") from None
    scorers: dict[str, str] = {}
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path, text)
    else:
        rows, scorers = _jsonl_rows(path, text)
    examples: list[Example] = []
    seen: set[str] = set()
    for line, row in rows:
        example = _example(path, line, row, stages, default)
        if example.id in seen:
            raise DatasetError(f"{path}:{line}: id '{printable(example.id)}' appears twice")
        seen.add(example.id)
        examples.append(example)
        if len(examples) > MAX_EXAMPLES:
            raise DatasetError(f"{path}: more than {MAX_EXAMPLES} examples")
    if not examples:
        raise DatasetError(f"{path}: no examples")
    return Dataset(path, examples, scorers)


def _jsonl_rows(path: Path, text: str) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, str]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    scorers: dict[str, str] = {}
    # only \n ends a line: U+2028, U+0085 and the like are legal inside a JSON string (str.splitlines splits there)
    for number, line in enumerate(_lines(text), 1):
        if len(rows) > MAX_EXAMPLES:  # before the rest is parsed: a 256 MiB file of tiny lines took 4.5 GB
            raise DatasetError(f"{path}: more than {MAX_EXAMPLES} examples")
        if not line.strip():
            continue
        if len(line) > LIMITS.record_bytes:
            raise DatasetError(f"{path}:{number}: a line over {LIMITS.record_bytes // MIB} MiB")
        try:
            row = parse_json(line, LIMITS, unique_keys=True)
        except Refused as exc:
            raise DatasetError(f"{path}:{number}: {exc.reason}") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        if not rows and not scorers and set(row) == {"scorers"}:
            scorers = _scorers(path, number, row["scorers"])
            continue
        rows.append((number, row))
    return rows, scorers


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (a list of them all would double the memory of a large file)."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield text[start:end]
        start = end + 1


def _scorers(path: Path, line: int, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DatasetError(f'{path}:{line}: "scorers" must map "stage.field" names to scorer names')
    return dict(value)


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    csv.field_size_limit(LIMITS.record_bytes)
    # strict: a quote never closed is an error, not a cell that swallows the rest of the file
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, dict[str, Any]]] = []
    ended = 0  # the line the last good row ended on: a broken row starts after it
    try:
        _check_header(path, reader.fieldnames or [])
        ended = reader.line_num
        for row in reader:
            if len(rows) > MAX_EXAMPLES:
                raise DatasetError(f"{path}: more than {MAX_EXAMPLES} examples")
            if None in row:
                raise DatasetError(f"{path}:{reader.line_num}: more cells than header columns")
            example = _csv_example(row)
            if not example["expected"]:
                short = " (the row has fewer cells than the header)" if None in row.values() else ""
                raise DatasetError(f"{path}:{reader.line_num}: no label in any expected.* column{short}")
            rows.append((reader.line_num, example))
            ended = reader.line_num
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            message = 'a quoted cell is never closed (a missing ")'
            raise DatasetError(f"{path}:{ended + 1}: {message}") from None
        raise DatasetError(f"{path}:{ended + 1}: not CSV ({exc})") from None
    return rows


def _check_header(path: Path, columns: Sequence[str]) -> None:
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DatasetError(f"{path}:1: column '{printable(column)}' appears twice")
        seen.add(column)
        if column == "expected" or (column.startswith("expected.") and column.strip(".") == "expected"):
            raise DatasetError(f'{path}:1: name label columns "expected.FIELD" or "expected.STAGE.FIELD"')


def _csv_example(row: dict[str, str | None]) -> dict[str, Any]:
    example: dict[str, Any] = {"expected": {}}
    for column, cell in row.items():  # a row shorter than the header has None for its missing cells
        if column.startswith("expected."):
            if cell:
                example["expected"][column.removeprefix("expected.")] = json_or_text(cell)
        elif column == "tags":
            example["tags"] = [t.strip() for t in (cell or "").split(";") if t.strip()]
        else:
            example[column] = cell
    return example


def _example(path: Path, line: int, row: dict[str, Any], stages: list[str], default: str) -> Example:
    ident = row.get("id")
    if not isinstance(ident, str | int) or isinstance(ident, bool) or str(ident) == "":
        raise DatasetError(f'{path}:{line}: every example needs an "id" (a string)')
    body = row.get("text", row.get("body"))
    if not isinstance(body, str):
        raise DatasetError(f"{path}:{line}: example '{printable(str(ident))}' has no \"text\" (a string)")
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DatasetError(f'{path}:{line}: "tags" must be a list of strings')
    document = {k: v for k, v in row.items() if k not in _RESERVED}
    document["id"] = str(ident)
    return Example(str(ident), document, _expected(path, line, row.get("expected"), stages, default), tuple(tags))


def _expected(path: Path, line: int, value: Any, stages: list[str], default: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not value:
        raise DatasetError(f'{path}:{line}: "expected" must be an object of expected outputs')
    # per stage when a key names a stage: a misspelt stage beside it stays a stage (reported), not a field
    per_stage = any(k in stages for k in value) and all(isinstance(v, dict) and "." not in k for k, v in value.items())
    if not per_stage:  # flat: 'field' or 'stage.field' keys
        grouped: dict[str, dict[str, Any]] = {}
        for name, expected in value.items():
            head, _, rest = name.partition(".")
            stage, field_name = (head, rest) if rest and head in stages else (default, name)
            grouped.setdefault(stage, {})[field_name] = expected
        return grouped
    empty = [stage for stage, fields in value.items() if not fields]
    if empty:
        raise DatasetError(f"{path}:{line}: \"expected\" of stage '{printable(empty[0])}' is empty")
    return {stage: dict(fields) for stage, fields in value.items()}
