"""Sources: HTML and PDF files become text documents; anything unreadable is quarantined with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadyflow.io.pdf import PdfExtractor
from steadyflow.io.sources import count_documents, html_text, read_documents, read_file, source_for


def pdf_bytes(lines: list[str]) -> bytes:
    """A minimal one-page PDF whose text layer holds ``lines`` (Helvetica, no compression)."""
    escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
    stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in escaped) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            "/Resources << /Font << /F1 5 0 R >> >> >>"
        ),
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_html_keeps_visible_text_and_drops_scripts_and_styles(tmp_path: Path) -> None:
    page = tmp_path / "ticket.html"
    page.write_text(
        "<html><head><title>Refund &amp; billing</title><style>p{color:red}</style>"
        "<script>alert('x'); document.write('SECRET')</script></head>"
        "<body><h1>Invoice 4411</h1><p>I was charged   twice.</p><noscript>enable js</noscript></body></html>"
    )
    doc = read_file(page, "ticket.html")
    assert doc.load_error is None
    assert doc.text == "Invoice 4411\nI was charged twice."
    assert doc.fields["title"] == "Refund & billing"
    assert "alert" not in doc.text and "SECRET" not in doc.text and "color" not in doc.text


def test_pdf_text_layer_is_read(tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(pdf_bytes(["Dear support,", "my order 7781 (blue) never arrived."]))
    doc = read_file(path, "letter.pdf")
    assert doc.load_error is None, doc.load_error
    assert "order 7781 (blue) never arrived" in doc.text
    assert doc.fields["pages"] == 1


def test_broken_and_empty_pdfs_are_quarantined_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "a_truncated.pdf").write_bytes(pdf_bytes(["hello"])[:120])
    (tmp_path / "b_garbage.pdf").write_bytes(b"this is not a pdf at all")
    (tmp_path / "c_no_text.pdf").write_bytes(pdf_bytes([]))
    (tmp_path / "d_ok.pdf").write_bytes(pdf_bytes(["fine"]))
    docs = list(read_documents(source_for(str(tmp_path)), Path.cwd()))
    errors = {d.id: d.load_error for d in docs}
    assert errors["a_truncated.pdf"] and errors["a_truncated.pdf"].startswith("unreadable PDF")
    assert errors["b_garbage.pdf"] and errors["b_garbage.pdf"].startswith("unreadable PDF")
    assert errors["c_no_text.pdf"] == "PDF has no text layer (scanned? OCR it first)"
    assert errors["d_ok.pdf"] is None


def test_counting_matches_reading(tmp_path: Path) -> None:
    for i in range(7):
        (tmp_path / f"{i}.txt").write_text(f"doc {i}")
    lines = tmp_path / "docs.jsonl"
    lines.write_text('{"id": 1, "text": "a"}\n\n{"id": 2, "text": "b"}\nnot json\n')
    table = tmp_path / "docs.csv"
    table.write_text('id,text\n1,"multi\nline"\n2,b\n')
    for path in (str(tmp_path / "*.txt"), str(lines), str(table)):
        spec = source_for(path)
        assert count_documents(spec, Path.cwd()) == len(list(read_documents(spec, Path.cwd())))


@pytest.fixture(scope="module")
def pdf() -> Iterator[PdfExtractor]:
    """One extraction worker for every example (starting one costs more than a small PDF)."""
    with PdfExtractor() as extractor:
        yield extractor


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_pdf_never_raise(pdf: PdfExtractor, data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.pdf"
        path.write_bytes(b"%PDF-1.4\n" + data)
        doc = read_file(path, "x.pdf", pdf=pdf)
        assert doc.load_error is not None or isinstance(doc.text, str)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_any_markup_gives_text_without_scripts(markup: str) -> None:
    # a '>' first closes whatever half tag or processing instruction the markup ends with (browsers do the same)
    title, text = html_text(markup + "><p></p><script>var injected = 1</script>")
    assert "var injected" not in text
    assert isinstance(title, str)
