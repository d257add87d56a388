"""PDF extraction runs in a worker bounded in time, memory and output; over a bound it is quarantined.

The hostile PDF is the one from the issue's class: a few KB, hundreds of pages that all draw one
highly compressed content stream, so pypdf decompresses and interprets it again for every page
(measured in-process: see ``test_the_shared_stream_pdf_is_slow_in_process``).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from steadyflow.io.limits import MIB, ReadLimits
from steadyflow.io.pdf import PdfExtractor
from steadyflow.io.sources import count_documents, read_documents, source_for
from tests.io.hostile_files import bomb_pdf, shared_stream_pdf, text_pdf

FAST = ReadLimits(pdf_seconds=1.0)


def test_the_shared_stream_pdf_is_slow_in_process() -> None:
    """The input class is real: one page of it costs pypdf a noticeable time, and there are hundreds."""
    from pypdf import PdfReader

    raw = shared_stream_pdf()
    reader = PdfReader(io.BytesIO(raw))
    started = time.monotonic()
    reader.pages[0].extract_text()
    per_page = time.monotonic() - started
    print(f"{len(raw)} bytes, {len(reader.pages)} pages, {per_page:.2f} s per page in-process")
    assert len(raw) < 100_000 and len(reader.pages) == 300
    assert per_page * len(reader.pages) > 5 * FAST.pdf_seconds


def test_a_slow_pdf_is_quarantined_at_the_time_bound_and_the_folder_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a_slow.pdf").write_bytes(shared_stream_pdf())
    (tmp_path / "b_fine.pdf").write_bytes(text_pdf(["after the slow one"]))
    (tmp_path / "c_note.txt").write_text("text")
    spec = source_for(str(tmp_path))
    started = time.monotonic()
    docs = list(read_documents(spec, Path.cwd(), FAST))
    elapsed = time.monotonic() - started
    errors = {d.id: d.load_error for d in docs}
    assert errors == {"a_slow.pdf": "PDF extraction exceeded 1 s", "b_fine.pdf": None, "c_note.txt": None}
    assert "after the slow one" in docs[1].text
    assert count_documents(spec, Path.cwd(), FAST) == 3
    assert elapsed < 15, elapsed  # two worker starts and one second, not minutes


def test_a_decompression_bomb_is_quarantined_at_the_memory_bound(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pdf"
    path.write_bytes(bomb_pdf(300 * MIB))
    assert path.stat().st_size < 1 * MIB
    limits = ReadLimits(pdf_memory_bytes=100 * MIB, pdf_seconds=30)
    [doc] = list(read_documents(source_for(str(path)), Path.cwd(), limits))
    assert doc.load_error is not None
    assert doc.load_error in (
        "PDF extraction exceeded the memory cap (100 MB)",
        "unreadable PDF: LimitReachedError",
    ) or doc.load_error.startswith("PDF extraction failed (worker exit code"), doc.load_error


def test_text_over_the_character_cap_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / "long.pdf").write_bytes(text_pdf(["a fairly long line of text"] * 5))
    [doc] = list(read_documents(source_for(str(tmp_path)), Path.cwd(), ReadLimits(pdf_chars=50)))
    assert doc.load_error == "PDF text longer than 50 characters"


def test_one_worker_serves_many_pdfs_and_is_replaced_after_a_timeout() -> None:
    with PdfExtractor(FAST) as pdf:
        texts = [pdf.extract(text_pdf([f"page {i}"])) for i in range(5)]
        slow = pdf.extract(shared_stream_pdf())
        after = pdf.extract(text_pdf(["still works"]))
    assert [t.error for t in texts] == [None] * 5 and "page 4" in texts[4].text
    assert slow.error == "PDF extraction exceeded 1 s"
    assert after.error is None and "still works" in after.text


@pytest.mark.parametrize("raw", [b"", b"%PDF-1.4\n", b"not a pdf", text_pdf(["x"])[:200]])
def test_broken_pdfs_are_reasons_not_crashes(raw: bytes) -> None:
    with PdfExtractor(FAST) as pdf:
        result = pdf.extract(raw)
    assert result.error is not None and result.error.startswith("unreadable PDF"), result.error
