"""Builders of hostile input files for the source tests: real bytes, no mocks."""

from __future__ import annotations

import zlib


def pdf_file(objects: list[bytes]) -> bytes:
    """A PDF of the given objects (1 is the catalog) with a correct cross-reference table."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def _stream(content: bytes, compress: bool) -> bytes:
    if not compress:
        return b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
    packed = zlib.compress(content, 9)
    return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"


def text_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer holds ``lines`` (Helvetica, no compression)."""
    escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
    content = ("BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in escaped) + " ET").encode("latin-1")
    return _pages_pdf(1, _stream(content, compress=False))


def _pages_pdf(pages: int, content: bytes) -> bytes:
    """``pages`` pages that all draw the one content stream (object 4)."""
    first_page = 6
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages))
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< >>",
        content,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        *([page] * pages),
    ]
    return pdf_file(objects)


def shared_stream_pdf(pages: int = 300, operators: int = 30_000) -> bytes:
    """The slow PDF: every page draws one highly compressed stream of ``operators`` text operators.

    The file stays small (the stream compresses about 500:1) while a reader decompresses and
    interprets the whole stream again for every page.
    """
    content = b"BT /F1 1 Tf 0 0 Td " + b"(a) Tj 0 0 Td " * operators + b"ET"
    return _pages_pdf(pages, _stream(content, compress=True))


def bomb_pdf(decompressed: int) -> bytes:
    """One page whose content stream inflates to ``decompressed`` bytes of spaces (a zlib bomb)."""
    packer, chunk, left, parts = zlib.compressobj(9), b" " * (1 << 20), decompressed, [b"BT /F1 12 Tf (x) Tj "]
    parts = [packer.compress(parts[0])]
    while left > 0:
        parts.append(packer.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(packer.compress(b" ET") + packer.flush())
    packed = b"".join(parts)
    stream = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"
    return _pages_pdf(1, stream)


def deep_json(depth: int) -> str:
    """A JSON object whose ``text`` is fine and whose ``x`` is nested ``depth`` levels deep."""
    return '{"text": "hello", "x": ' + "[" * depth + "]" * depth + "}"
