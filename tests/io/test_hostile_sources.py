"""Hostile documents: each is quarantined with its reason, and the rest of the batch is read.

Real files only: deep and huge JSON, surrogates, CSV rows over the csv module's limit, sparse
multi-gigabyte lines, FIFOs, sockets, symlinks out of the folder, duplicate and hostile ids.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from steadyflow.core.document import Document
from steadyflow.io.limits import LIMITS, MIB, ReadLimits
from steadyflow.io.sources import count_documents, read_documents, source_for
from tests.io.hostile_files import deep_json


def within(seconds: float, read: Callable[[], Any]) -> Any:
    """``read()``, failing the test (instead of hanging it) when it takes longer than ``seconds``."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(read())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if failure:
        raise failure[0]
    assert result, f"reading did not finish within {seconds} s (blocked on a FIFO?)"
    return result[0]


def read_all(path: Path | str, limits: ReadLimits = LIMITS) -> list[Document]:
    """Every document of ``--input path``; counting must agree with reading, and ids be unique."""
    spec = source_for(str(path))
    docs: list[Document] = within(60, lambda: list(read_documents(spec, Path.cwd(), limits)))
    assert within(60, lambda: count_documents(spec, Path.cwd(), limits)) == len(docs)
    assert len({d.id for d in docs}) == len(docs), [d.id for d in docs]
    for doc in docs:  # whatever came in, every document can be written by a sink and sent to a provider
        json.dumps(
            {"id": doc.id, "source": doc.source, "text": doc.text, "fields": doc.fields, "error": doc.load_error},
            ensure_ascii=False,
        ).encode("utf-8")
    return docs


def by_id(docs: list[Document]) -> dict[str, Document]:
    return {d.id: d for d in docs}


# ---- item 2: one document never stops the batch ------------------------------------------------


def test_deep_json_file_is_quarantined_and_the_folder_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(deep_json(100_000))
    (tmp_path / "b.json").write_text(deep_json(40))
    (tmp_path / "c.txt").write_text("still read")
    docs = by_id(read_all(tmp_path))
    assert docs["a.json"].load_error == "JSON nested deeper than 64 levels"
    assert docs["b.json"].load_error is None and docs["b.json"].text == "hello"
    assert docs["c.txt"].text == "still read"


def test_huge_integers_are_quarantined_in_json_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text('{"text": "hi", "n": ' + "9" * 5000 + "}")
    (tmp_path / "ok.json").write_text('{"text": ' + "9" * 600 + "}")
    docs = by_id(read_all(tmp_path))
    assert docs["big.json"].load_error == "JSON integer longer than 640 digits"
    assert docs["ok.json"].text == "9" * 600  # under the bound: read, and printable later
    lines = tmp_path / "docs.jsonl"
    lines.write_text(
        '{"id": "a", "text": 1}\n{"id": "b", "text": '
        + "1" * 5000
        + '}\n{"id": "c", "text": "x", "n": -'
        + "2" * 700
        + "}\n"
        '{"id": "d", "text": "fine"}\n'
    )
    rows = by_id(read_all(lines))
    assert rows["a"].text == "1"
    assert rows["jsonl-2"].load_error == rows["jsonl-3"].load_error == "JSON integer longer than 640 digits"
    assert rows["d"].text == "fine"


def test_lone_surrogates_and_nan_are_quarantined(tmp_path: Path) -> None:
    (tmp_path / "lone.json").write_text('{"text": "ok \\ud800 then"}')
    (tmp_path / "key.json").write_text('{"text": "ok", "\\udfff": 1}')
    (tmp_path / "pair.json").write_text('{"text": "smile \\ud83d\\ude00"}')
    (tmp_path / "nan.json").write_text('{"text": NaN}')
    docs = by_id(read_all(tmp_path))
    assert (
        docs["lone.json"].load_error
        == docs["key.json"].load_error
        == "JSON has a lone UTF-16 surrogate escape (\\ud800-\\udfff)"
    )
    assert docs["pair.json"].text == "smile \U0001f600"
    assert docs["nan.json"].load_error == "invalid JSON: NaN is not a JSON value"
    lines = tmp_path / "docs.jsonl"
    lines.write_text('{"id": "a", "text": "\\udc80"}\n{"id": "b", "text": "fine"}\n')
    rows = read_all(lines)
    assert [(d.id, d.load_error is None) for d in rows] == [("jsonl-1", False), ("b", True)]


def test_csv_field_over_the_csv_module_limit_is_read(tmp_path: Path) -> None:
    big = "word " * 60_000  # 300 KB, over csv's default field_size_limit (131072)
    table = tmp_path / "t.csv"
    table.write_text(f'id,text\n1,first\n2,"{big}"\n3,third\n')
    docs = read_all(table)
    assert [d.text for d in docs] == ["first", big, "third"]


def test_csv_row_over_the_cap_is_quarantined_and_the_next_row_starts_clean(tmp_path: Path) -> None:
    # the long field holds newlines, commas and lines that look like rows: none may become a document
    fake_rows = "".join(f"{900 + i},fake row {i}\n" for i in range(2000))
    table = tmp_path / "t.csv"
    table.write_text(f'id,text\n1,first\n2,"{fake_rows}"\n3,"third, with a comma"\n4,last\n')
    docs = read_all(table, ReadLimits(record_bytes=4096))
    assert [(d.id, d.text) for d in docs] == [
        ("1", "first"),
        ("csv-2", ""),
        ("3", "third, with a comma"),
        ("4", "last"),
    ]
    assert docs[1].load_error == "CSV row longer than 4096 bytes"
    assert docs[1].source.endswith("t.csv:3") and docs[2].source.endswith(f"t.csv:{3 + 2001}")  # lines, not rows


def test_csv_encodings_line_endings_and_nul(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_bytes(
        b'\xef\xbb\xbf"id","text"\r\n1,"crlf\r\ninside"\r\n2,bad \xff byte\r\n3,nul \x00 kept\r\n\r\n4,old mac\r5,end'
    )
    docs = read_all(table)
    assert [d.id for d in docs] == ["1", "csv-2", "3", "4", "5"]
    assert docs[0].text == "crlf\r\ninside"
    assert docs[1].load_error == "undecodable: not valid UTF-8 (byte 6 of the row)"  # never replaced silently
    assert docs[2].text == "nul \x00 kept"  # the stage's input check quarantines binary content
    assert docs[3].text == "old mac" and docs[4].text == "end"


def test_csv_with_an_undecodable_header_quarantines_every_row(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_bytes(b"id,t\xffxt\n1,a\n2,b\n")
    docs = read_all(table)
    assert [d.load_error for d in docs] == [
        "CSV header row unreadable: undecodable: not valid UTF-8 (byte 4 of the row)"
    ] * 2


def test_a_huge_jsonl_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    lines = tmp_path / "docs.jsonl"
    with lines.open("wb") as handle:
        handle.write(b'{"id": "a", "text": "before"}\n')
        handle.truncate(handle.tell() + 256 * MIB)  # sparse: 256 MB of NUL bytes on one line, no disk used
        handle.seek(0, os.SEEK_END)
        handle.write(b'\n{"id": "b", "text": "after"}\n')
    tracemalloc.start()
    try:
        started = time.monotonic()
        docs = read_all(lines, ReadLimits(record_bytes=MIB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(d.id, d.load_error) for d in docs] == [
        ("a", None),
        ("jsonl-2", f"line longer than {MIB} bytes"),
        ("b", None),
    ]
    assert peak < 8 * MIB, peak
    print(f"256 MB line read and counted in {time.monotonic() - started:.1f} s, peak {peak / MIB:.1f} MB")


def test_a_file_over_the_size_cap_is_quarantined_unread(tmp_path: Path) -> None:
    with (tmp_path / "huge.txt").open("wb") as handle:
        handle.truncate(LIMITS.file_bytes + 1)  # sparse
    (tmp_path / "small.txt").write_text("fine")
    (tmp_path / "utf16.txt").write_bytes("hello".encode("utf-16"))
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"text": "with a BOM"}')
    tracemalloc.start()
    try:
        docs = by_id(read_all(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert docs["huge.txt"].load_error == f"file larger than {LIMITS.file_bytes} bytes"
    assert docs["small.txt"].text == "fine"
    assert (
        docs["utf16.txt"].load_error
        == "undecodable: not valid UTF-8 (byte 0) (UTF-16 byte order mark: save it as UTF-8)"
    )
    assert docs["bom.json"].text == "with a BOM"
    assert peak < 4 * MIB, peak


# ---- item 4: ids made unique never collide with real ids ---------------------------------------


def test_duplicate_ids_never_take_a_real_id(tmp_path: Path) -> None:
    lines = tmp_path / "docs.jsonl"
    lines.write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in ["x", "x", "x~2", "x", "x~3~2", "x~3"]))
    first = [d.id for d in read_all(lines)]
    assert len(set(first)) == 6
    assert first[2] == "x~2" and first[5] == "x~3" and first[0] == "x"
    assert first == [d.id for d in read_all(lines)]  # stable: a resume sees the same ids
    table = tmp_path / "docs.csv"
    table.write_text("id,text\nx,a\nx,b\nx~2,c\n")
    assert [d.id for d in read_all(table)] == ["x", "x~3", "x~2"]


def test_empty_huge_and_control_character_ids(tmp_path: Path) -> None:
    long_a, long_b = "a" * 5000 + "1", "a" * 5000 + "2"
    rows = [
        {"id": ""},
        {"id": None},
        {"id": 0},
        {"id": long_a},
        {"id": long_b},
        {"id": "two\nlines\x1b[31m"},
        {"id": "jsonl-1"},
        {"id": " "},
    ]
    lines = tmp_path / "docs.jsonl"
    lines.write_text("".join(json.dumps({**row, "text": "t"}) + "\n" for row in rows))
    ids = [d.id for d in read_all(lines)]
    assert ids[0] == "jsonl-1~2" and ids[1] == "jsonl-2" and ids[2] == "0"  # the row whose real id is jsonl-1 keeps it
    assert ids[3] != ids[4] and all(len(i) <= 200 for i in ids)
    assert ids[5] == "two\\x0alines\\x1b[31m"
    assert ids[6] == "jsonl-1" and ids[7] == "jsonl-8"


def test_file_names_with_bad_bytes_and_control_characters(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    for name in (b"bad\xff.txt", b"new\nline.txt", b"new\\x0aline.txt", b"ok.txt"):
        with open(folder + b"/" + name, "wb") as handle:
            handle.write(b"text")
    docs = read_all(tmp_path)
    assert sorted(d.id for d in docs) == sorted(["bad\\udcff.txt", "new\\x0aline.txt", "new\\x0aline.txt~2", "ok.txt"])
    assert all(d.load_error is None for d in docs)


# ---- item 6: special files and links out of the folder are reported, never read -----------------


def test_fifos_sockets_devices_links_and_folders_named_like_documents(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    os.mkfifo(folder / "pipe.txt")
    os.mkfifo(folder / "pipe")
    (folder / "passwd.txt").symlink_to(outside / "secret.txt")
    (folder / "etc").symlink_to(outside)
    (folder / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (folder / "inside.txt").symlink_to(folder / "ok.txt")
    (folder / "dir.txt").mkdir()
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.md").write_text("deep")
    (folder / "null.txt").symlink_to("/dev/null")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(folder / "sock.txt"))
    try:
        flat = {d.id: d.load_error for d in read_all(folder)}
        deep = {d.id: d.load_error for d in read_all(folder / "**" / "*")}
    finally:
        unix.close()
    assert flat == {
        "ok.txt": None,
        "inside.txt": None,
        "pipe.txt": "not a regular file: FIFO",
        "pipe": "not a regular file: FIFO",
        "sock.txt": "not a regular file: socket",
        "passwd.txt": "symlink leaves the input folder",
        "etc": "symlink leaves the input folder",
        "null.txt": "symlink leaves the input folder",
        "dangling.txt": "symlink leaves the input folder",
        "dir.txt": "not a regular file: directory",
    }
    assert deep == {**flat, "sub/deep.md": None}  # ** does not walk the link out of the folder


def test_a_fifo_or_device_given_as_the_table(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "in.jsonl")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    [fifo] = read_all(tmp_path / "in.jsonl")
    assert (fifo.id, fifo.load_error) == ("jsonl-1", "not a regular file: FIFO")
    [zero] = read_all(tmp_path / "zero.csv")
    assert zero.load_error == "not a regular file: character device"
    [device] = read_all("/dev/null")
    assert device.load_error == "not a regular file: character device"


@pytest.mark.parametrize("name", ["x.txt", "x.pdf", "x.json"])
def test_read_file_refuses_a_fifo_without_blocking(tmp_path: Path, name: str) -> None:
    from steadyflow.io.sources import read_file

    os.mkfifo(tmp_path / name)
    doc = within(20, lambda: read_file(tmp_path / name, name))
    assert doc.load_error == "not a regular file: FIFO"


def test_a_real_id_is_never_taken_by_a_made_one(tmp_path: Path) -> None:
    # a fallback id (no id -> jsonl-N) or an escaped one (a newline -> \x0a) came first and took a real id
    rows = [
        {"id": "", "text": "a"},
        {"text": "b"},
        {"id": "jsonl-2", "text": "c"},
        {"id": "jsonl-2", "text": "d"},
        {"id": "x\n", "text": "e"},
        {"id": "x\\x0a", "text": "f"},
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = {doc.text: doc.id for doc in read_documents(source_for(str(tmp_path / "t.jsonl")), tmp_path)}
    assert got["c"] == "jsonl-2" and got["f"] == "x\\x0a"  # the documents that really have these ids keep them
    assert len(set(got.values())) == len(rows)
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "a\nb.txt").write_text("made")
    (folder / "a\\x0ab.txt").write_text("real")
    named = {doc.text: doc.id for doc in read_documents(source_for(str(folder)), tmp_path)}
    assert named["real"] == "a\\x0ab.txt" and named["made"] != named["real"]
