"""Properties of every source under arbitrary input: reading never raises, nothing is lost or doubled.

For any folder (random names and kinds: files of random bytes, deep JSON, huge integers, surrogate
escapes, FIFOs, sockets, links in and out, folders named like documents), any JSONL and any CSV:
every entry becomes exactly one document (with or without ``load_error``), counting agrees with
reading, ids are unique, and every document can be encoded as UTF-8 JSON (what sinks and provider
clients do with it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadyflow.core.document import Document
from steadyflow.io.limits import ReadLimits
from steadyflow.io.sources import count_documents, read_documents, source_for
from steadyflow.spec.models import TableSource
from tests.io.hostile_files import deep_json, text_pdf

SMALL = ReadLimits(record_bytes=2048, file_bytes=64 * 1024, pdf_seconds=5.0)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _checked(docs: list[Document], expected: int, spec: Any, base: Path) -> None:
    assert len(docs) == expected
    assert count_documents(spec, base, SMALL) == expected
    assert len({d.id for d in docs}) == len(docs)
    for doc in docs:
        assert 0 < len(doc.id) <= 220
        json.dumps(
            {"id": doc.id, "source": doc.source, "text": doc.text, "fields": doc.fields, "error": doc.load_error},
            ensure_ascii=False,
        ).encode("utf-8")
        assert doc.load_error is None or "\n" not in doc.load_error


# ---- hostile contents -------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_hostile_json = st.one_of(
    st.builds(lambda depth: deep_json(depth), st.integers(1, 3000)),
    st.builds(lambda digits: '{"text": ' + "7" * digits + "}", st.integers(1, 6000)),
    st.builds(lambda code: f'{{"text": "a\\u{code:04x} b"}}', st.integers(0xD700, 0xE000)),
    st.sampled_from(
        ['{"text": NaN}', '{"text": -Infinity}', '{"text": 1e999}', "[]", "null", '{"text": "\\ud83d\\ude00"}']
    ),
    st.builds(lambda value: json.dumps({"id": value, "text": value}), _json_values),
)
_contents = st.one_of(
    st.binary(max_size=300),
    _hostile_json.map(str.encode),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


# ---- folders ----------------------------------------------------------------------------------

_names = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]), min_size=1, max_size=12),
    st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\x00" not in b).map(os.fsdecode),
).filter(
    lambda name: not name.startswith(".") and len(os.fsencode(name)) < 200 and not name.lower().startswith("target")
)
_suffixes = st.sampled_from([".txt", ".md", ".json", ".eml", ".html", ".pdf", ".TXT", ".bin", ""])
_kinds = st.sampled_from(
    ["file", "file", "file", "fifo", "socket", "link_out", "link_in", "dangling", "dir_like_doc", "pdf"]
)


def _make(folder: Path, outside: Path, name: str, kind: str, content: bytes, sockets: list[socket.socket]) -> bool:
    """Create one entry; True when it is an entry of the source (plain folders are not)."""
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        if len(os.fsencode(path)) > 100:  # AF_UNIX path limit
            return _make(folder, outside, name, "file", content, sockets)
        sockets.append(socket.socket(socket.AF_UNIX))
        sockets[-1].bind(str(path))
    elif kind == "link_out":
        path.symlink_to(outside / "secret.txt")
    elif kind == "link_in":
        path.symlink_to(folder / "target.txt" if content[:1] < b"\x80" else path)  # to a sibling, or to itself (a loop)
    elif kind == "dangling":
        path.symlink_to(folder / "missing-target")
    elif kind == "dir_like_doc":
        path.mkdir()
        return path.suffix.lower() in (".txt", ".md", ".json", ".eml", ".html", ".htm", ".pdf")
    else:
        path.write_bytes(text_pdf(["hello"]) if kind == "pdf" else content)
    return True


@PROPERTY
@given(st.lists(st.tuples(_names, _suffixes, _kinds, _contents), max_size=8, unique_by=lambda e: (e[0] + e[1]).lower()))
def test_any_folder_is_read_entry_for_entry(entries: list[tuple[str, str, str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder, outside = Path(tmp) / "in", Path(tmp) / "out"
        folder.mkdir()
        outside.mkdir()
        (outside / "secret.txt").write_text("SECRET")
        (folder / "target.txt").write_text("a link's target")
        sockets: list[socket.socket] = []
        try:
            expected = 1 + sum(
                _make(folder, outside, name + suffix, kind, content, sockets) for name, suffix, kind, content in entries
            )
            spec = source_for(str(folder))
            docs = list(read_documents(spec, Path.cwd(), SMALL))
            _checked(docs, expected, spec, Path.cwd())
            assert not any("SECRET" in d.text for d in docs)
        finally:
            for unix in sockets:
                unix.close()


# ---- tables -----------------------------------------------------------------------------------

_line = st.one_of(
    _contents.map(lambda b: b.replace(b"\n", b" ")),
    st.sampled_from([b"", b"   ", b"\r"]),
    st.builds(
        lambda i: json.dumps({"id": i, "text": "t"}).encode(), st.sampled_from(["x", "x~2", "x~3", "", "jsonl-1", 0])
    ),
)


@PROPERTY
@given(st.lists(_line, max_size=12), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_any_jsonl_is_read_line_for_line(lines: list[bytes], ending: bytes, bom: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ending.join(lines))
        spec = source_for(str(path))
        docs = list(read_documents(spec, Path.cwd(), SMALL))
        _checked(docs, sum(1 for line in lines if line.strip()), spec, Path.cwd())


_cell = st.text(
    alphabet=st.sampled_from('ab;,"\r\n\x00é~'), max_size=12
)  # no blanks: a blank record is skipped, csv keeps it


def _cells(doc: Document) -> list[str]:
    cells = [doc.fields[name] for name in ("id", "text", "more")]
    while cells and cells[-1] is None:  # a short row: csv.DictReader's restval
        cells.pop()
    return cells + doc.fields.get("_extra", [])


@PROPERTY
@given(st.lists(st.lists(_cell, min_size=1, max_size=4), min_size=1, max_size=8), st.sampled_from(["\n", "\r\n", "\r"]))
def test_csv_rows_are_the_csv_modules_rows(rows: list[list[str]], ending: str) -> None:
    """The record splitter agrees with the csv module on any file csv.writer writes."""
    text = io.StringIO()
    csv.writer(text, lineterminator=ending).writerows([["id", "text", "more"], *rows])
    expected = [row for row in csv.reader(io.StringIO(text.getvalue(), newline="")) if row][1:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_text(text.getvalue(), encoding="utf-8", newline="")
        spec = TableSource(kind="csv", path=str(path), id_field=None)
        docs = list(read_documents(spec, Path.cwd(), SMALL))
    assert [_cells(doc) for doc in docs] == expected


@PROPERTY
@given(
    st.lists(
        st.one_of(st.binary(max_size=60), _cell.map(str.encode), st.sampled_from([b'"', b'""', b'"a""', b"\xff"])),
        max_size=30,
    )
)
def test_any_csv_bytes_are_read_record_for_record(pieces: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(b"id,text\n" + b",".join(pieces))
        spec = source_for(str(path))
        docs = list(read_documents(spec, Path.cwd(), SMALL))
        _checked(docs, count_documents(spec, Path.cwd(), SMALL), spec, Path.cwd())
