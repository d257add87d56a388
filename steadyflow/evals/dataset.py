"""Labelled datasets: documents with the outputs a pipeline should give them.

JSONL, one example per line::

    {"id": "t01", "text": "Subject: ...", "expected": {"triage": {"category": "billing"}}, "tags": ["pii"]}

``text`` (or ``body``) is the document; every other key except ``expected`` and ``tags`` is a
document field, as in a JSONL source. ``expected`` maps stage ids to ``{field: value}``; with one
stage to score, ``{"category": "billing"}`` is short for it. A first line
``{"scorers": {"triage.summary": "fuzzy:0.8"}}`` declares scorers (see
:mod:`steadyflow.evals.scorers`) that take precedence over the pipeline's ``eval:`` section.

CSV: columns ``id``, ``text``, ``tags`` (``;``-separated), ``expected.FIELD`` or
``expected.STAGE.FIELD``; other columns are document fields. A cell that reads as JSON (a number,
``true``, a list) is that value, any other cell a string.

Labels are never shown to the pipeline: they are taken out of the document before it runs.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyflow.io.limits import LIMITS, MIB

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
            raise DatasetError(f"{path}:{line}: id '{example.id}' appears twice")
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
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > LIMITS.record_bytes:
            raise DatasetError(f"{path}:{number}: a line over {LIMITS.record_bytes // MIB} MiB")
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({type(exc).__name__})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        if not rows and not scorers and set(row) == {"scorers"}:
            scorers = _scorers(path, number, row["scorers"])
            continue
        rows.append((number, row))
    return rows, scorers


def _scorers(path: Path, line: int, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DatasetError(f'{path}:{line}: "scorers" must map "stage.field" names to scorer names')
    return dict(value)


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    csv.field_size_limit(LIMITS.record_bytes)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        for row in reader:
            if None in row:
                raise DatasetError(f"{path}:{reader.line_num}: more cells than header columns")
            rows.append((reader.line_num, _csv_example(row)))
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: not CSV ({exc})") from None
    return rows


def _csv_example(row: dict[str, str]) -> dict[str, Any]:
    example: dict[str, Any] = {"expected": {}}
    for column, cell in row.items():
        if column.startswith("expected."):
            if cell != "":
                example["expected"][column.removeprefix("expected.")] = _cell(cell)
        elif column == "tags":
            example["tags"] = [t.strip() for t in cell.split(";") if t.strip()]
        else:
            example[column] = cell
    return example


def _cell(cell: str) -> Any:
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def _example(path: Path, line: int, row: dict[str, Any], stages: list[str], default: str) -> Example:
    ident = row.get("id")
    if not isinstance(ident, str | int) or isinstance(ident, bool) or str(ident) == "":
        raise DatasetError(f'{path}:{line}: every example needs an "id" (a string)')
    body = row.get("text", row.get("body"))
    if not isinstance(body, str):
        raise DatasetError(f"{path}:{line}: example '{ident}' has no \"text\" (a string)")
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DatasetError(f'{path}:{line}: "tags" must be a list of strings')
    document = {k: v for k, v in row.items() if k not in _RESERVED}
    document["id"] = str(ident)
    return Example(str(ident), document, _expected(path, line, row.get("expected"), stages, default), tuple(tags))


def _expected(path: Path, line: int, value: Any, stages: list[str], default: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not value:
        raise DatasetError(f'{path}:{line}: "expected" must be an object of expected outputs')
    per_stage = all(k in stages and isinstance(v, dict) for k, v in value.items())
    if not per_stage:  # flat: 'field' or 'stage.field' keys
        grouped: dict[str, dict[str, Any]] = {}
        for name, expected in value.items():
            head, _, rest = name.partition(".")
            stage, field_name = (head, rest) if rest and head in stages else (default, name)
            grouped.setdefault(stage, {})[field_name] = expected
        return grouped
    return {stage: dict(fields) for stage, fields in value.items()}
