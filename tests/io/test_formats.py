"""A source says how to parse its files: e-mail in a .txt is an e-mail, attachments stay out of the text.

Real files and real MIME messages (built with the stdlib), read through the same source functions
a run uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from steadyflow.core.document import Document
from steadyflow.io.email_parse import MAX_PARTS, PARSE_SECONDS, from_email, looks_like_email, strip_quoted
from steadyflow.io.sources import read_documents, read_file
from steadyflow.spec.models import FilesSource, TableSource

PDF_BYTES = b"%PDF-1.4 binary \x00\x01\x02 SECRET-IN-PDF " * 20


def message(body: str = "My card was charged twice for order 7781.", attach: bool = True) -> bytes:
    """A multipart e-mail with a plain body, an HTML alternative, a text and a binary attachment."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Ann Example <ann@example.com>"
    msg["To"] = "support@example.com"
    msg["Cc"] = "boss@example.com"
    msg["Subject"] = "Refund request"
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<abc@example.com>"
    msg["X-Ticket"] = "T-1"
    msg.set_content(body)
    msg.add_alternative(f"<p>{body} HTML-ONLY-MARK</p>", subtype="html")
    if attach:
        msg.add_attachment(b"line one\nTEXT-ATTACHMENT-MARK\n", maintype="text", subtype="plain", filename="notes.txt")
        msg.add_attachment(PDF_BYTES, maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes()


def files(folder: Path, pattern: str = "*", **options: Any) -> list[Document]:
    return list(read_documents(FilesSource(kind="files", path=str(folder / pattern), **options), Path.cwd()))


def without_filename(doc: Document) -> tuple[str, dict[str, Any]]:
    return doc.text, {k: v for k, v in doc.fields.items() if k != "filename"}


def test_the_same_email_as_txt_eml_or_declared_gives_the_same_document(tmp_path: Path) -> None:
    raw = message()
    for name in ("a.txt", "b.eml"):
        (tmp_path / name).write_bytes(raw)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "c.msgdump").write_bytes(raw)  # an extension auto would refuse
    txt, eml = files(tmp_path, "*.*")
    (declared,) = files(tmp_path / "other", format="email")
    assert txt.load_error is eml.load_error is declared.load_error is None
    assert without_filename(txt) == without_filename(eml) == without_filename(declared)
    assert txt.fields["format"] == "email" and txt.fields["filename"] == "a.txt"
    assert txt.text == "Subject: Refund request\n\nMy card was charged twice for order 7781."


def test_attachment_bodies_stay_out_of_the_text_and_are_listed(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(message())
    (doc,) = files(tmp_path)
    for mark in ("TEXT-ATTACHMENT-MARK", "SECRET-IN-PDF", "JVBER", "HTML-ONLY-MARK", "Content-Type", "ann@example.com"):
        assert mark not in doc.text
    assert doc.fields["attachments"] == [
        {"name": "notes.txt", "type": "text/plain", "size": 30},
        {"name": "invoice.pdf", "type": "application/pdf", "size": len(PDF_BYTES)},
    ]


def test_attachments_text_appends_text_attachments_only(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(message())
    (doc,) = files(tmp_path, attachments="text")
    assert "[attachment: notes.txt]\nline one\nTEXT-ATTACHMENT-MARK" in doc.text
    assert "SECRET-IN-PDF" not in doc.text and "JVBER" not in doc.text


def test_headers_asked_for_become_fields(tmp_path: Path) -> None:
    raw = b"Received: from a\nReceived: from b\n" + message(attach=False)
    (tmp_path / "m.eml").write_bytes(raw)
    (default,) = files(tmp_path)
    assert {k: default.fields[k] for k in ("subject", "from", "to", "date")} == {
        "subject": "Refund request",
        "from": "Ann Example <ann@example.com>",
        "to": "support@example.com",
        "date": "Mon, 02 Nov 2026 10:00:00 +0000",
    }
    assert "cc" not in default.fields
    (asked,) = files(tmp_path, headers=["From", "cc", "x-ticket", "received", "in-reply-to"])
    assert asked.fields["from"] == "Ann Example <ann@example.com>" and asked.fields["cc"] == "boss@example.com"
    assert asked.fields["x-ticket"] == "T-1"
    assert asked.fields["received"] == ["from a", "from b"]  # repeated: a list
    assert asked.fields["in-reply-to"] == "" and "to" not in asked.fields
    assert asked.text.startswith("Subject: Refund request")  # the subject is in the text whatever is asked


def test_a_ticket_that_starts_like_headers_is_not_sniffed_as_email(tmp_path: Path) -> None:
    tickets = {
        "a.txt": "Subject: refund\n\nI was charged twice. From: my bank statement\n",
        "b.txt": "From: Ann\nSubject: refund\n\nPlease help.\n",  # no header only mail software writes
        "c.txt": "From: Ann\nDate: today\nI was charged twice.\n\nThanks\n",  # a body line inside the block
        "d.txt": "Dear support,\nFrom: Ann\nDate: Monday\n\nhello\n",
    }
    for name, text in tickets.items():
        (tmp_path / name).write_text(text)
    for doc in files(tmp_path):
        assert doc.text == tickets[doc.id] and "format" not in doc.fields, doc.id


def test_sniffing_accepts_mbox_lines_crlf_and_folded_headers() -> None:
    assert looks_like_email(
        b"From ann@example.com Mon Nov  2 10:00:00 2026\r\nFrom: ann@example.com\r\n"
        b"Subject: a long\r\n subject\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"
    )
    assert looks_like_email(b"Received: from mx\n\tby mx2\nFrom: a@b\nDate: Mon, 2 Nov 2026\n\nhi")
    assert not looks_like_email(b"From: a@b\nDate: Mon\n")  # never ends


def test_an_explicit_format_reads_any_extension_and_text_keeps_a_message_raw(tmp_path: Path) -> None:
    (tmp_path / "page.data").write_text("<html><title>T</title><p>Hello</p><script>x()</script></html>")
    (tmp_path / "m.txt").write_bytes(message(attach=False))
    (html,) = files(tmp_path, "*.data", format="html")
    assert (html.text, html.fields["title"]) == ("Hello", "T")
    (unsupported,) = files(tmp_path, "*.data")
    assert unsupported.load_error == "unsupported file type '.data'"
    (raw,) = files(tmp_path, "*.txt", format="text")
    assert raw.text.startswith("From: Ann Example") and "format" not in raw.fields


def test_latin1_email_saved_as_txt_is_decoded_by_its_charset(tmp_path: Path) -> None:
    raw = (
        "From: a@example.com\nDate: Mon, 2 Nov 2026 10:00:00 +0000\nSubject: caf\u00e9\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\nd\u00e9j\u00e0 pay\u00e9\n"
    )
    (tmp_path / "m.txt").write_bytes(raw.encode("latin-1"))
    (doc,) = files(tmp_path)
    assert doc.load_error is None and doc.text.endswith("d\u00e9j\u00e0 pay\u00e9")


def test_html_only_body_is_visible_text(tmp_path: Path) -> None:
    raw = (
        b"From: a@b.c\nDate: Mon, 2 Nov 2026 10:00:00 +0000\nSubject: hi\nMIME-Version: 1.0\n"
        b"Content-Type: text/html; charset=utf-8\n\n<p>Hello <b>there</b></p><script>steal()</script>\n"
    )
    doc = from_email("m", raw, "m")
    assert doc.text == "Subject: hi\n\nHello there"


REPLY = """Thanks, that fixed it.
> inline question?
My inline answer.

On Mon, 2 Nov 2026 at 10:00, Support Team <support@example.com>
wrote:
> Did you try restarting?
> > older quote
"""


def test_quoted_replies_are_stripped_only_when_asked(tmp_path: Path) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["Date"], msg["Subject"] = "a@b.c", "Mon, 2 Nov 2026 10:00:00 +0000", "Re: help"
    msg.set_content(REPLY)
    (tmp_path / "m.eml").write_bytes(msg.as_bytes())
    (kept,) = files(tmp_path)
    (stripped,) = files(tmp_path, quoted="strip")
    assert "Did you try restarting?" in kept.text
    assert stripped.text == "Subject: Re: help\n\nThanks, that fixed it.\nMy inline answer."
    outlook = "Sure.\n\n-----Original Message-----\nFrom: x\nold text\n"
    assert strip_quoted(outlook) == "Sure."
    html_reply = "Yes.\nOn Monday, Ann wrote:\nthe quoted text without markers\n"
    assert strip_quoted(html_reply) == "Yes."


def multipart(parts: int) -> bytes:
    out = b'From: a@b\nDate: Mon, 2 Nov 2026\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="x"\n\n'
    return out + b"--x\nContent-Type: text/plain\n\nhi\n" * parts + b"--x--\n"


def nested(depth: int) -> bytes:
    out = b"From: a@b\nDate: Mon, 2 Nov 2026\nMIME-Version: 1.0\n"
    for level in range(depth):
        out += b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (level, level)
    out += b"Content-Type: text/plain\n\nhi\n"
    return out + b"".join(b"--b%d--\n" % level for level in reversed(range(depth)))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (multipart(100_000), f"e-mail has more than {MAX_PARTS} MIME parts"),
        (nested(5000), f"e-mail has more than {MAX_PARTS} MIME parts"),
        (nested(40), "e-mail nested deeper than 16 levels"),
        (
            b"From: a@b\nContent-Type: text/plain; " + b"; ".join(b"a%d=b" % i for i in range(100_000)) + b"\n\nhi\n",
            "e-mail header 'Content-Type' longer than 4096 characters",
        ),
    ],
)
def test_hostile_multipart_messages_are_quarantined_quickly(tmp_path: Path, raw: bytes, reason: str) -> None:
    (tmp_path / "bomb.eml").write_bytes(raw)
    started = time.monotonic()
    (doc,) = files(tmp_path)
    assert time.monotonic() - started < 5  # unbounded, the stdlib parser takes minutes on each of these
    assert doc.load_error == reason


def test_a_long_address_header_is_kept_as_written_without_parsing_it(tmp_path: Path) -> None:
    hostile_to = b"<" * 200_000  # parsed, this one header takes minutes
    (tmp_path / "m.eml").write_bytes(b"From: a@b\nTo: " + hostile_to + b"\nSubject: s\n\nbody\n")
    started = time.monotonic()
    (doc,) = files(tmp_path)
    assert time.monotonic() - started < 5
    assert doc.load_error is None and doc.fields["to"] == hostile_to.decode() and doc.text == "Subject: s\n\nbody"


def test_table_text_field_can_hold_raw_emails(tmp_path: Path) -> None:
    raw = message().decode()
    lines = tmp_path / "mail.jsonl"
    lines.write_text(json.dumps({"key": "m-1", "raw": raw, "from": "crm-user"}) + "\n")
    spec = TableSource(kind="jsonl", path=str(lines), text_field="raw", id_field="key", format="email")
    (doc,) = read_documents(spec, Path.cwd())
    assert doc.id == "m-1" and doc.text == "Subject: Refund request\n\nMy card was charged twice for order 7781."
    assert doc.fields["raw"] == doc.text  # the raw message (base64 and all) is not kept in the fields
    assert doc.fields["from"] == "crm-user"  # the record's own column wins over a header
    assert doc.fields["subject"] == "Refund request" and len(doc.fields["attachments"]) == 2
    table = tmp_path / "pages.csv"
    table.write_text('id,html\n1,"<p>Hello</p><script>x()</script>"\n')
    (page,) = read_documents(TableSource(kind="csv", path=str(table), text_field="html", format="html"), Path.cwd())
    assert page.text == "Hello" and page.fields["html"] == "Hello"


def test_a_broken_email_in_a_table_is_quarantined_without_its_text(tmp_path: Path) -> None:
    lines = tmp_path / "mail.jsonl"
    lines.write_text(json.dumps({"id": 1, "text": multipart(1000).decode()}) + "\n")
    (doc,) = read_documents(TableSource(kind="jsonl", path=str(lines), format="email"), Path.cwd())
    assert doc.load_error == f"e-mail has more than {MAX_PARTS} MIME parts" and "text" not in doc.fields


def test_source_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="'body' is a field every e-mail document has"):
        FilesSource(kind="files", path="x", headers=["from", "Body"])
    with pytest.raises(ValidationError):
        FilesSource(kind="files", path="x", headers=["from:"])
    with pytest.raises(ValidationError):
        TableSource(kind="csv", path="x", format="pdf")
    assert FilesSource(kind="files", path="x", headers=["From", "from"]).headers == ["from"]


UTF7 = b"Content-Type: text/plain; charset=utf-7\n\n"


@settings(max_examples=300, deadline=None)
@example(b"+2AA-", UTF7)  # UTF-7 decodes this to a lone surrogate, which no sink can write
@given(
    st.binary(max_size=3000),
    st.sampled_from(
        [b"", b"From: a@b\nDate: x\nMIME-Version: 1.0\n", UTF7, b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n']
    ),
)
def test_email_parsing_never_raises_on_any_bytes(data: bytes, prefix: bytes) -> None:
    for options in (
        FilesSource(kind="files", path=""),
        FilesSource(kind="files", path="", attachments="text", quoted="strip"),
    ):
        doc = from_email("x", prefix + data, "x", options)
        # whatever came in, the document can be written by a sink and sent to a provider
        json.dumps({"text": doc.text, "fields": doc.fields, "error": doc.load_error}, ensure_ascii=False).encode(
            "utf-8"
        )
        assert doc.load_error is None or doc.text == ""


def test_read_file_takes_the_source_options(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_bytes(message(attach=False))
    doc = read_file(path, "m.log", spec=FilesSource(kind="files", path="", format="email", headers=["cc"]))
    assert doc.fields["cc"] == "boss@example.com" and doc.text.startswith("Subject: Refund request")


def test_many_slow_headers_stop_at_the_time_bound(tmp_path: Path) -> None:
    # each header is under the size cap but costs the stdlib parser ~15 ms; 300 of them would take seconds more
    part = b"--x\nContent-Type: text/plain\nContent-Disposition: attachment; " + b";" * 4000 + b"\n\nhi\n"
    raw = b'From: a@b\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="x"\n\n' + part * 190 + b"--x--\n"
    started = time.monotonic()
    doc = from_email("x", raw, "x")
    assert time.monotonic() - started < PARSE_SECONDS + 1
    assert doc.load_error == f"e-mail took longer than {PARSE_SECONDS:g} s to parse"


def test_no_subject_no_subject_line_and_an_attached_message_is_one_attachment() -> None:
    from email.message import EmailMessage

    inner = EmailMessage()
    inner["From"], inner["Subject"] = "old@example.com", "FORWARDED-SUBJECT"
    inner.set_content("FORWARDED-BODY")
    outer = EmailMessage()
    outer["From"], outer["Date"] = "a@b.c", "Mon, 2 Nov 2026 10:00:00 +0000"
    outer.set_content("see below")
    outer.add_attachment(inner)
    doc = from_email("m", outer.as_bytes(), "m")
    assert doc.text == "see below"
    assert [a["type"] for a in doc.fields["attachments"]] == ["message/rfc822"]
    empty = from_email("e", b"From: a@b.c\nDate: Mon, 2 Nov 2026\n\n\n", "e")
    assert empty.load_error is None and empty.text == ""  # quarantined later as an empty document
