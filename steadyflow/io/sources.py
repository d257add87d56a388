"""Read documents lazily from a folder glob, a JSONL file or a CSV file.

Every entry of a source becomes exactly one Document, in a stable order (resume relies on it),
one at a time. One that cannot be read is still yielded, with ``load_error`` set, so that it is
quarantined with its reason instead of stopping the batch or vanishing: undecodable or malformed
content, anything over a bound of ``ReadLimits`` (file size, record size, JSON depth, integer
digits, PDF time, memory and text), and, in folders, entries that are not regular files (FIFOs,
sockets, devices, directories named like documents) or whose path leads out of the input folder
through a symlink. Such entries are never opened. Ids are unique (see ``steadyflow.io.ids``).

How a file is parsed is the source's ``format``: ``auto`` goes by extension, and reads a ``.txt``
that starts with e-mail headers as e-mail (``email_parse.looks_like_email``), so renaming a saved
message does not change the document; any other format parses every file that way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from steadyflow.core.document import Document
from steadyflow.io.email_parse import from_email, looks_like_email
from steadyflow.io.files import open_regular, read_bounded
from steadyflow.io.formats import Refused, decode, from_json, html_text
from steadyflow.io.ids import clean_id, unique
from steadyflow.io.limits import LIMITS, ReadLimits, printable
from steadyflow.io.pdf import PDF_MAX_PAGES, PdfExtractor
from steadyflow.io.tables import table_count, table_documents, table_ids
from steadyflow.spec.models import FilesSource, TableSource

__all__ = [
    "AUTO",
    "FILE_TYPES",
    "LIMITS",
    "PDF_MAX_PAGES",
    "ReadLimits",
    "count_documents",
    "format_of",
    "html_text",
    "read_documents",
    "read_file",
    "source_for",
]

FILE_TYPES = (".txt", ".md", ".json", ".eml", ".html", ".htm", ".pdf")
_BY_EXTENSION = {".eml": "email", ".pdf": "pdf", ".json": "json", ".html": "html", ".htm": "html"}
AUTO = FilesSource(kind="files", path="")
"""The source a single file is read with unless told otherwise: ``format: auto``, default options."""
_MAGIC = re.compile(r"[*?[]")


def _from_pdf(doc_id: str, raw: bytes, source: str, name: str, pdf: PdfExtractor) -> Document:
    result = pdf.extract(raw)
    pages = {"pages": result.pages} if result.pages else {}
    if result.error:
        return Document(doc_id, "", source, fields=pages, load_error=result.error)
    if not result.text.strip():
        return Document(doc_id, "", source, fields=pages, load_error="PDF has no text layer (scanned? OCR it first)")
    fields = {"filename": name, **pages}
    if result.replaced:
        fields["replaced_characters"] = result.replaced
    return Document(doc_id, result.text, source, fields=fields)


def format_of(spec: FilesSource, suffix: str, raw: bytes) -> str:
    """How to parse a file: the source's format, or with ``auto`` its extension (a .txt is sniffed)."""
    if spec.format != "auto":
        return spec.format
    if suffix == ".txt" and looks_like_email(raw):
        return "email"
    return _BY_EXTENSION.get(suffix, "text")


def _parse(
    raw: bytes,
    suffix: str,
    doc_id: str,
    source: str,
    name: str,
    limits: ReadLimits,
    pdf: PdfExtractor,
    spec: FilesSource,
) -> Document:
    how = format_of(spec, suffix, raw)
    if how == "email":
        return from_email(doc_id, raw, source, spec, {"filename": name})
    if how == "pdf":
        return _from_pdf(doc_id, raw, source, name, pdf)
    if how == "json":
        return from_json(doc_id, raw, source, limits)
    text = decode(raw)
    if how == "html":
        title, body = html_text(text)
        return Document(doc_id, body, source, fields={"filename": name, "title": title})
    return Document(doc_id, text, source, fields={"filename": name})


def _read(
    path: Path, opened: str, doc_id: str, limits: ReadLimits, pdf: PdfExtractor, spec: FilesSource, follow: bool = True
) -> Document:
    source, name, suffix = printable(str(path)), printable(path.name), path.suffix.lower()
    try:
        fd = open_regular(opened, follow)  # before the type check: a FIFO is reported as a FIFO
        try:
            if spec.format == "auto" and suffix not in FILE_TYPES:
                kind = f"'{printable(suffix[:16])}'" if suffix else "(no extension)"
                raise Refused(f"unsupported file type {kind}")
            raw = read_bounded(fd, limits.file_bytes)
        finally:
            os.close(fd)
        return _parse(raw, suffix, doc_id, source, name, limits, pdf, spec)
    except Refused as exc:
        return Document(doc_id, "", source, load_error=exc.reason)
    except Exception as exc:
        # a parser bug on hostile bytes (html.parser, email...) is this document's failure, not the batch's
        return Document(doc_id, "", source, load_error=f"unreadable: {type(exc).__name__}")


def read_file(
    path: Path, doc_id: str, limits: ReadLimits = LIMITS, pdf: PdfExtractor | None = None, spec: FilesSource = AUTO
) -> Document:
    """One document from one file; never raises for bad content, never opens a FIFO or device.

    ``pdf`` is a running extractor to reuse; without one, a PDF starts (and stops) its own worker.
    ``spec`` says how to parse it (``format``, e-mail options); its ``path`` is not used.
    """
    if pdf is not None:
        return _read(path, str(path), doc_id, limits, pdf, spec)
    with PdfExtractor(limits) as own:
        return _read(path, str(path), doc_id, limits, own, spec)


def _split(pattern: str) -> tuple[Path, Path]:
    """(the folder a pattern reads from: its leading components without wildcards, the rest)."""
    parts = Path(pattern).parts
    cut = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts) - 1)
    return Path(*parts[:cut]) if cut > 0 else Path("."), Path(*parts[cut:])


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _listed(path: Path, root_real: str) -> bool:
    """Whether a match is an entry of the source (a folder is structure, not an entry)."""
    if path.suffix.lower() in FILE_TYPES or not path.is_dir():
        return True
    # a linked folder is not walked; one that leads out of the input folder is reported, not skipped
    return path.is_symlink() and not _inside(os.path.realpath(path), root_real)


def _entries(pattern: str) -> tuple[Path, list[Path]]:
    """(root, the sorted entries a folder pattern matches): held as paths, ~100 bytes each."""
    root, rest = _split(pattern)
    if not rest.parts:
        return root, []
    # pathlib's ** does not walk into linked folders (glob.glob's does: a link to / made it walk the
    # whole machine); like glob.glob, wildcards skip hidden names unless the pattern names them
    hidden_ok = any(part.startswith(".") for part in rest.parts)
    root_real = os.path.realpath(root)
    found = (
        p
        for p in root.glob(str(rest))
        if hidden_ok or not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return root, sorted(p for p in found if _listed(p, root_real))


def _entry_id(path: Path, root: Path) -> str:
    return clean_id(os.path.relpath(path, root), "unnamed")


def _folder(root: Path, entries: list[Path], limits: ReadLimits, spec: FilesSource) -> Iterator[Document]:
    root_real = os.path.realpath(root)
    with PdfExtractor(limits) as pdf:
        for path in entries:
            doc_id, real = _entry_id(path, root), os.path.realpath(path)
            if not _inside(real, root_real):
                doc = Document(doc_id, "", printable(str(path)), load_error="symlink leaves the input folder")
            else:
                # the resolved path is opened without following links: a link swapped in after the check fails
                doc = _read(path, real, doc_id, limits, pdf, spec, follow=False)
            doc.id_made = doc_id != os.path.relpath(path, root)
            yield doc


def _path_of(spec: FilesSource | TableSource, base_dir: Path) -> str:
    return spec.path if Path(spec.path).is_absolute() else str(base_dir / spec.path)


def read_documents(spec: FilesSource | TableSource, base_dir: Path, limits: ReadLimits = LIMITS) -> Iterator[Document]:
    """Yield every document of a source, in a stable order (resume relies on it), one at a time."""
    path = _path_of(spec, base_dir)
    if isinstance(spec, TableSource):
        table = Path(path)
        yield from unique(table_documents(spec, table, limits), table_ids(spec, table, limits))
        return
    root, entries = _entries(path)
    real = (os.path.relpath(p, root) for p in entries)  # a file name that needs escaping must not take a real one
    yield from unique(
        _folder(root, entries, limits, spec), (name for name in real if clean_id(name, "unnamed") == name)
    )


def count_documents(spec: FilesSource | TableSource, base_dir: Path, limits: ReadLimits = LIMITS) -> int:
    """How many documents ``read_documents`` yields, without parsing them (for progress and ETA)."""
    path = _path_of(spec, base_dir)
    if isinstance(spec, TableSource):
        return table_count(spec, Path(path), limits)
    return len(_entries(path)[1])


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
