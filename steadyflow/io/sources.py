"""Read documents lazily from a folder glob, a JSONL file or a CSV file.

A document that cannot be read is still yielded, with ``load_error`` set, so
that it is quarantined with its reason instead of stopping the batch.
"""

from __future__ import annotations

import csv
import email
import email.policy
import glob
import io
import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from steadyflow.spec.models import FilesSource, TableSource
from steadyflow.stages.document import Document

FILE_TYPES = (".txt", ".md", ".json", ".eml", ".html", ".htm", ".pdf")
PDF_MAX_PAGES = 500
"""Pages read from one PDF; a longer one is quarantined rather than read for minutes."""


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML page: no script, style or template content, nothing executed or fetched."""

    _HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "title", "pre", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in self._HIDDEN
        self._in_title = self._in_title or tag == "title"
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in self._HIDDEN and self._hidden > 0
        self._in_title = self._in_title and tag != "title"
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._hidden:
            self.parts.append(data)


def html_text(markup: str) -> tuple[str, str]:
    """(title, visible text) of an HTML document; blank lines collapsed."""
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return " ".join(parser.title.split()), "\n".join(line for line in lines if line)


def _from_pdf(doc_id: str, raw: bytes, source: str) -> Document:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            return Document(doc_id, "", source, load_error="encrypted PDF")
        if len(reader.pages) > PDF_MAX_PAGES:
            return Document(doc_id, "", source, load_error=f"PDF has {len(reader.pages)} pages > {PDF_MAX_PAGES}")
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as exc:
        # pypdf raises a zoo of types on damaged or hostile files (KeyError, zlib.error, struct.error...);
        # every one means "cannot read this document": it is quarantined with the type, never a crashed batch
        return Document(doc_id, "", source, load_error=f"unreadable PDF: {type(exc).__name__}")
    pages = len(reader.pages)
    if not text.strip():
        return Document(doc_id, "", source, fields={"pages": pages}, load_error="PDF has no text layer (scanned? OCR it first)")
    return Document(doc_id, text, source, fields={"filename": Path(source).name, "pages": pages})


def _decode(raw: bytes) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", f"undecodable: not valid UTF-8 (byte {exc.start})"


def _from_json(doc_id: str, text: str, source: str) -> Document:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Document(doc_id, "", source, load_error=f"invalid JSON: line {exc.lineno} column {exc.colno}")
    if not isinstance(value, dict):
        return Document(doc_id, "", source, load_error="JSON document is not an object")
    body = value.get("text", value.get("body"))
    return Document(doc_id, str(body) if body is not None else json.dumps(value, ensure_ascii=False), source, fields=value)


def _from_eml(doc_id: str, raw: bytes, source: str) -> Document:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    fields = {k: str(message.get(k, "")) for k in ("subject", "from", "to", "date")}
    part = message.get_body(preferencelist=("plain", "html")) if hasattr(message, "get_body") else None
    try:
        body = part.get_content() if part is not None else ""
    except (LookupError, UnicodeDecodeError):
        return Document(doc_id, "", source, fields=fields, load_error="undecodable: e-mail body charset")
    text = f"Subject: {fields['subject']}\n\n{body}".strip()
    return Document(doc_id, text, source, fields={**fields, "body": body})


def read_file(path: Path, doc_id: str) -> Document:
    """One document from one file; never raises for bad content."""
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        return Document(doc_id, "", source, load_error=f"unsupported file type '{suffix or path.name}'")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Document(doc_id, "", source, load_error=f"unreadable: {exc.strerror}")
    if suffix == ".eml":
        return _from_eml(doc_id, raw, source)
    if suffix == ".pdf":
        return _from_pdf(doc_id, raw, source)
    text, error = _decode(raw)
    if error:
        return Document(doc_id, "", source, load_error=error)
    if suffix == ".json":
        return _from_json(doc_id, text, source)
    if suffix in (".html", ".htm"):
        title, body = html_text(text)
        return Document(doc_id, body, source, fields={"filename": path.name, "title": title})
    return Document(doc_id, text, source, fields={"filename": path.name})


def _table_doc(row: dict[str, Any], number: int, spec: TableSource, source: str) -> Document:
    doc_id = str(row.get(spec.id_field, "") or "") if spec.id_field else ""
    text = row.get(spec.text_field)
    doc_id = doc_id or f"{spec.kind}-{number}"
    if text is None:
        return Document(doc_id, "", source, fields=row, load_error=f"no '{spec.text_field}' field")
    return Document(doc_id, str(text), source, fields=row)


def _read_table(spec: TableSource, path: Path) -> Iterator[Document]:
    source = str(path)
    if spec.kind == "csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            for number, record in enumerate(csv.DictReader(handle), start=1):
                yield _table_doc(dict(record), number, spec, f"{source}:{number + 1}")  # +1: the header line
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            text, error = _decode(raw)
            row: Any = None
            try:
                row = json.loads(text) if not error else None
            except json.JSONDecodeError:
                error = "invalid JSON line"
                row = None
            if not isinstance(row, dict):
                yield Document(f"{spec.kind}-{number}", "", f"{source}:{number}", load_error=error or "line is not a JSON object")
                continue
            yield _table_doc(row, number, spec, f"{source}:{number}")


def _unique(docs: Iterator[Document]) -> Iterator[Document]:
    """Make ids unique so no document is dropped or written twice under one id."""
    seen: dict[str, int] = {}
    for doc in docs:
        if doc.id in seen:
            seen[doc.id] += 1
            doc.id = f"{doc.id}~{seen[doc.id]}"
        else:
            seen[doc.id] = 1
        yield doc


def _paths(pattern: str) -> list[Path]:
    # the sorted path list (not the documents) is held: ~100 bytes per file
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def read_documents(spec: FilesSource | TableSource, base_dir: Path) -> Iterator[Document]:
    """Yield every document of a source, in a stable order (resume relies on it), one at a time."""
    pattern = spec.path if Path(spec.path).is_absolute() else str(base_dir / spec.path)
    if isinstance(spec, TableSource):
        yield from _unique(_read_table(spec, Path(pattern)))
        return
    prefix = pattern.split("*", 1)[0] if "*" in pattern else pattern
    root = Path(prefix) if prefix.endswith(("/", "\\")) else Path(prefix).parent
    yield from _unique(read_file(p, str(p.relative_to(root)) if p.is_relative_to(root) else p.name) for p in _paths(pattern))


def count_documents(spec: FilesSource | TableSource, base_dir: Path) -> int:
    """How many documents a source has, without parsing them (for progress and ETA)."""
    pattern = spec.path if Path(spec.path).is_absolute() else str(base_dir / spec.path)
    if isinstance(spec, FilesSource):
        return len(_paths(pattern))
    path = Path(pattern)
    if not path.is_file():
        return 0
    if spec.kind == "csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def source_for(path: str) -> FilesSource | TableSource:
    """The source a ``--input PATH`` means: a folder, a glob, a .jsonl or a .csv file."""
    lowered = path.lower()
    if lowered.endswith(".jsonl"):
        return TableSource(kind="jsonl", path=path)
    if lowered.endswith(".csv"):
        return TableSource(kind="csv", path=path)
    if Path(path).is_dir():
        return FilesSource(kind="files", path=str(Path(path) / "*"))
    return FilesSource(kind="files", path=path)
