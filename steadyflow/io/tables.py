r"""Table sources: one document per JSONL line or CSV row, read in bounded chunks.

The file is split into records here, not by the csv module or by line iteration, so that one
record is never held beyond ``record_bytes`` (a 2 GB line is skipped in 1 MiB chunks and
quarantined) and a bad row never costs the rest of the file: the csv module parses one record at
a time, and a record it refuses is quarantined while the next starts cleanly at the next record
boundary. The split follows the csv module's rules (a quote opens a quoted field only at the start
of a field, ``""`` inside is a quote, a record ends at an unquoted ``\n``, ``\r\n`` or ``\r``).

CSV and JSONL are decoded strictly: a row that is not UTF-8 is quarantined, not changed (silent
replacement characters would be processed as if the author wrote them). A UTF-8 byte order mark at
the start of the file is dropped. Blank records are skipped, the same way when counting and reading.

The ``text_field`` value is the text as it is (``format: text``), or parsed as a raw e-mail message
or HTML (``format: email|html``); then the parsed text replaces the raw value in the fields too (a
raw message with base64 attachments must not reach a prompt through ``doc``), and the fields the
parser adds (headers, attachments, title) are added without overwriting the record's own columns.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from steadyflow.core.document import Document
from steadyflow.io.email_parse import from_email
from steadyflow.io.files import open_regular
from steadyflow.io.formats import Refused, decode, html_text, parse_json
from steadyflow.io.ids import clean_id
from steadyflow.io.limits import ReadLimits, printable
from steadyflow.spec.models import TableSource

Record = tuple[int, bytes | int]
"""(line the record starts on, its bytes or, over the cap, its size in bytes)."""

_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_FIELD_END = re.compile(rb"[,\r\n]")
_START, _UNQUOTED, _QUOTED, _QUOTE, _CR = range(5)
_MAY_CLASH = re.compile(rb"~|\\u007[eE]|\\x|(?:jsonl|csv)-\d|unnamed")  # a renamed, escaped or fallback id's shape
"""A record whose id may end in ~N: a literal tilde, or one escaped in JSON."""


class _Record:
    """The bytes of the record being split, kept only while within the cap."""

    def __init__(self, cap: int) -> None:
        self.cap, self.parts, self.size, self.newlines = cap, list[bytes](), 0, 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        self.newlines += piece.count(b"\n")
        if self.size <= self.cap:
            self.parts.append(piece)
        else:
            self.parts.clear()

    def take(self, line: int) -> tuple[Record | None, int]:
        """(the record, unless blank; the line the next record starts on)."""
        data: bytes | int = b"".join(self.parts) if self.size <= self.cap else self.size
        next_line = line + 1 + self.newlines
        self.parts, self.size, self.newlines = [], 0, 0
        blank = isinstance(data, bytes) and not data.strip()
        return (None if blank else (line, data)), next_line


def _chunks(fd: int) -> Iterator[bytes]:
    first = True
    while chunk := os.read(fd, _CHUNK):
        if first and chunk.startswith(_BOM):
            chunk = chunk[len(_BOM) :]
        first = False
        yield chunk


def _lines(chunks: Iterator[bytes], cap: int) -> Iterator[Record]:
    record, line = _Record(cap), 1
    for chunk in chunks:
        at = 0
        while (end := chunk.find(b"\n", at)) >= 0:
            record.add(chunk[at:end])
            at = end + 1
            done, line = record.take(line)
            if done:
                yield done
        record.add(chunk[at:])
    done, line = record.take(line)
    if done:
        yield done


def _csv_records(chunks: Iterator[bytes], cap: int) -> Iterator[Record]:
    """Split CSV bytes into records by the csv module's quoting rules (see the module docstring)."""
    record, line, state = _Record(cap), 1, _START
    for chunk in chunks:
        start = 0  # where the unsaved part of the record begins; a record's scan starts there too
        while start < len(chunk):
            if state == _CR:  # a \r ended the record: a \n right after it belongs to that end
                state = _START
                if chunk[start] == 0x0A:
                    start += 1
                continue
            end, state = _record_end(chunk, start, state)
            if end < 0:  # the record goes on in the next chunk
                break
            record.add(chunk[start:end])
            start = end + 1
            done, line = record.take(line)
            if done:
                yield done
        record.add(chunk[start:])
    done, line = record.take(line)
    if done:
        yield done


def _record_end(chunk: bytes, at: int, state: int) -> tuple[int, int]:
    r"""(Index of the unquoted ``\n`` or ``\r`` ending the record scanned from ``at``, or -1; the state then)."""
    while at < len(chunk):
        if state == _QUOTED:
            end = chunk.find(b'"', at)
            if end < 0:
                return -1, _QUOTED
            at, state = end + 1, _QUOTE
        elif state == _QUOTE:  # "" is a quote in the field; anything else closes it
            at, state = (at + 1, _QUOTED) if chunk[at] == 0x22 else (at, _UNQUOTED)
        elif state == _START and chunk[at] == 0x22:
            at, state = at + 1, _QUOTED
        else:
            found = _FIELD_END.search(chunk, at)
            if found is None:
                return -1, _UNQUOTED
            end = found.start()
            if chunk[end] != 0x2C:
                return end, _CR if chunk[end] == 0x0D else _START
            at, state = end + 1, _START
    return -1, state


def _records(spec: TableSource, fd: int, limits: ReadLimits) -> Iterator[Record]:
    split = _csv_records if spec.kind == "csv" else _lines
    return split(_chunks(fd), limits.record_bytes)


def _row_doc(row: dict[str, Any], fallback: str, spec: TableSource, source: str) -> Document:
    value = row.get(spec.id_field) if spec.id_field else None
    doc_id = clean_id(None if value is None else str(value), fallback)
    doc = _row_content(row, doc_id, spec, source)
    doc.id_made = value is None or doc_id != str(value)
    return doc


def _row_content(row: dict[str, Any], doc_id: str, spec: TableSource, source: str) -> Document:
    text = row.get(spec.text_field)
    if text is None:
        return Document(doc_id, "", source, fields=row, load_error=f"no '{printable(spec.text_field)}' field")
    if spec.format == "text":
        return Document(doc_id, str(text), source, fields=row)
    return _parsed_row(doc_id, str(text), row, spec, source)


def _parsed_row(doc_id: str, raw: str, row: dict[str, Any], spec: TableSource, source: str) -> Document:
    """A record whose text field holds a raw e-mail or HTML page (``format: email|html``)."""
    columns = {name: value for name, value in row.items() if name != spec.text_field}
    if spec.format == "email":
        parsed = from_email(doc_id, raw.encode("utf-8"), source, spec)
        if parsed.load_error:
            return Document(doc_id, "", source, fields=columns, load_error=parsed.load_error)
        text, added = parsed.text, parsed.fields
    else:
        try:
            title, text = html_text(raw)
        except Exception as exc:  # html.parser on hostile markup: this record's failure, not the table's
            return Document(doc_id, "", source, fields=columns, load_error=f"unreadable HTML: {type(exc).__name__}")
        added = {"title": title}
    return Document(doc_id, text, source, fields={**added, **columns, spec.text_field: text})


def _at_line(doc: Document, line: int) -> Document:
    doc.line = line  # where replay finds the row again; the record keeps the number, never the path (ids live there)
    return doc


def _jsonl_doc(record: Record, spec: TableSource, source: str, limits: ReadLimits) -> Document:
    line, data = record
    fallback, where = f"{spec.kind}-{line}", f"{source}:{line}"
    try:
        if isinstance(data, int):
            raise Refused(f"line longer than {limits.record_bytes} bytes")
        row = parse_json(decode(data, " of the line"), limits)
    except Refused as exc:
        return Document(fallback, "", where, load_error=exc.reason, id_made=True)
    if not isinstance(row, dict):
        return Document(fallback, "", where, load_error="line is not a JSON object", id_made=True)
    return _row_doc(row, fallback, spec, where)


def _csv_values(data: bytes | int, limits: ReadLimits) -> list[str]:
    if isinstance(data, int):
        raise Refused(f"CSV row longer than {limits.record_bytes} bytes")
    text = decode(data, " of the row", strip_bom=False)
    try:
        rows = list(csv.reader([text]))
    except csv.Error:
        raise Refused("unparseable CSV row") from None
    if len(rows) != 1:
        raise Refused("unparseable CSV row")
    return rows[0]


def _csv_doc(
    number: int, record: Record, header: list[str] | str, spec: TableSource, source: str, limits: ReadLimits
) -> Document:
    """Data row ``number``; ``header`` is the header row's cells, or why it could not be read."""
    line, data = record
    fallback, where = f"csv-{number}", f"{source}:{line}"
    try:
        if isinstance(header, str):
            raise Refused(f"CSV header row unreadable: {header}")
        values = _csv_values(data, limits)
    except Refused as exc:
        return Document(fallback, "", where, load_error=exc.reason, id_made=True)
    row: dict[str, Any] = {name: None for name in header}  # a short row: missing cells are None, like csv.DictReader
    row.update(zip(header, values, strict=False))
    if len(values) > len(header):
        row["_extra"] = values[len(header) :]
    return _row_doc(row, fallback, spec, where)


Wanted = Callable[[bytes | int], bool]


def _csv_docs(
    records: Iterator[Record], source: str, spec: TableSource, limits: ReadLimits, wanted: Wanted
) -> Iterator[Document]:
    # the record splitter bounds every row already; the csv module's own (global) limit must not be lower
    csv.field_size_limit(max(csv.field_size_limit(), limits.record_bytes))
    header: list[str] | str = "the file has no header row"
    for number, record in enumerate(records):
        if number == 0:
            try:
                header = _csv_values(record[1], limits)
            except Refused as exc:
                header = exc.reason
        elif wanted(record[1]):
            yield _at_line(_csv_doc(number, record, header, spec, source, limits), record[0])


def _everything(data: bytes | int) -> bool:
    return True


def _documents(spec: TableSource, path: Path, limits: ReadLimits, wanted: Wanted = _everything) -> Iterator[Document]:
    source = printable(str(path))
    try:
        fd = open_regular(str(path))
    except Refused as exc:  # a FIFO, a device, a directory given as the table: one quarantined entry
        yield Document(f"{spec.kind}-1", "", source, load_error=exc.reason)
        return
    try:
        records = _records(spec, fd, limits)
        if spec.kind == "csv":
            yield from _csv_docs(records, source, spec, limits, wanted)
        else:
            yield from (
                _at_line(_jsonl_doc(record, spec, source, limits), record[0]) for record in records if wanted(record[1])
            )
    finally:
        os.close(fd)


def table_documents(spec: TableSource, path: Path, limits: ReadLimits) -> Iterator[Document]:
    """Every record of a table as a Document (ids cleaned, not yet unique)."""
    return _documents(spec, path, limits)


def table_ids(spec: TableSource, path: Path, limits: ReadLimits) -> Iterator[str]:
    """The ids of the records that may clash with a renamed id (``x~2``); a cheap first pass."""
    docs = _documents(spec, path, limits, lambda data: isinstance(data, bytes) and _MAY_CLASH.search(data) is not None)
    return (doc.id for doc in docs if not doc.id_made)


def table_count(spec: TableSource, path: Path, limits: ReadLimits) -> int:
    """How many documents ``table_documents`` yields, without parsing a record."""
    try:
        fd = open_regular(str(path))
    except Refused:
        return 1
    try:
        total = sum(1 for _ in _records(spec, fd, limits))
    finally:
        os.close(fd)
    return max(0, total - 1) if spec.kind == "csv" else total
