"""E-mail messages as documents: Subject + body for the model, headers and attachments as fields.

The text a model sees is ``Subject: ...`` and the plain-text body (the HTML body as visible text
when there is no plain one). Headers the source asks for become fields; attachments are listed by
name, type and size, and their bodies are dropped unless ``attachments: text`` appends the content
of text attachments. A binary part is never decoded into the text.

The stdlib parser is quadratic on hostile input (measured: one 64 KiB header of ``<`` took 15 s to
parse, 100,000 tiny parts a minute), so every message is bounded: at most ``MAX_PARTS`` MIME parts
and ``MAX_DEPTH`` levels of nesting, MIME headers of at most ``MAX_HEADER_CHARS`` characters (other
headers longer than that are kept as written, not parsed), and ``PARSE_SECONDS`` of parsing.
A message over a bound is quarantined with the bound as its reason.
"""

from __future__ import annotations

import codecs
import email.message
import email.policy
import re
import time
from collections.abc import Iterator
from email.headerregistry import HeaderRegistry
from email.parser import BytesFeedParser
from typing import Any

from steadyflow.core.document import Document
from steadyflow.io.formats import Refused, html_text
from steadyflow.io.limits import has_surrogate, printable
from steadyflow.spec.models import ParseOptions

MAX_PARTS = 200
MAX_DEPTH = 16
MAX_HEADER_CHARS = 4096
PARSE_SECONDS = 2.0
DEFAULTS = ParseOptions()
_SNIFF_BYTES = 64 * 1024
_CORE = frozenset({"from", "to", "subject", "date", "message-id", "mime-version"})
_MACHINE = frozenset({"date", "message-id", "mime-version"})
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")
# codecs that are not character sets of mail, and whose decoders are slow on hostile input
_NOT_CHARSETS = frozenset({"idna", "punycode", "raw_unicode_escape", "unicode_escape"})
Message = email.message.MIMEPart


def looks_like_email(raw: bytes) -> bool:
    """Whether a text file is a saved e-mail message (only ``format: auto`` asks, for ``.txt``).

    Conservative on purpose: the file must start with a header block (an mbox ``From `` line
    aside) in which every line is an RFC 5322 header ``Name: value`` or its folded continuation,
    ending at a blank line within the first 64 KiB, with a ``From:`` header and at least one that
    only mail software writes or RFC 5322 requires (``Date:``, ``Message-ID:``, ``MIME-Version:``).
    A ticket that starts with ``Subject: refund`` (even with ``From:``) stays text.
    """
    lines = raw[:_SNIFF_BYTES].splitlines()
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]
    names: set[str] = set()
    for number, line in enumerate(lines):
        if not line.strip():
            return number > 0 and "from" in names and bool(names & _MACHINE)
        if line[:1] in (b" ", b"\t") and number > 0:
            continue
        match = _FIELD.match(line)
        if match is None:
            return False
        names.add(match.group(1).decode("ascii").lower())
    return False  # no blank line: a header block that never ends is not a message we can tell


class _Budget:
    """Parts, time and header sizes of one message; the parser calls it for every part and header."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + PARSE_SECONDS
        self.parts = 0
        self.registry = HeaderRegistry()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Refused(f"e-mail took longer than {PARSE_SECONDS:g} s to parse")

    def new_part(self, policy: Any = None) -> email.message.EmailMessage:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Refused(f"e-mail has more than {MAX_PARTS} MIME parts")
        self.check_time()
        return email.message.EmailMessage(policy=policy or email.policy.default)

    def header(self, name: str, value: str) -> Any:
        self.check_time()
        if len(value) <= MAX_HEADER_CHARS:
            return self.registry(name, value)
        if name.lower().startswith("content-"):  # the parser needs these parsed: refuse rather than wait
            raise Refused(f"e-mail header '{printable(name[:40])}' longer than {MAX_HEADER_CHARS} characters")
        return value  # kept as written: parsing it could take seconds


def _parse(raw: bytes) -> Message:
    budget = _Budget()
    policy = email.policy.default.clone(header_factory=budget.header, message_factory=budget.new_part)
    parser = BytesFeedParser(policy=policy)
    parser.feed(raw)
    message = parser.close()
    if not isinstance(message, Message):
        raise Refused("unreadable e-mail")
    return message


def _walk(message: Message) -> Iterator[tuple[Message, tuple[Message, ...]]]:
    """Every part with its multipart ancestors, iteratively (no recursion on hostile nesting)."""
    stack: list[tuple[Message, tuple[Message, ...]]] = [(message, ())]
    while stack:
        part, ancestors = stack.pop()
        if len(ancestors) > MAX_DEPTH:
            raise Refused(f"e-mail nested deeper than {MAX_DEPTH} levels")
        yield part, ancestors
        if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
            children = [child for child in part.get_payload() if isinstance(child, Message)]
            stack.extend((child, (*ancestors, part)) for child in reversed(children))


def _header(message: Message, name: str) -> str | list[str]:
    """A header as text ('' when absent, a list when repeated); Refused when it is not UTF-8."""
    values = []
    for item in message.get_all(name, []):
        value = str(item)
        if has_surrogate(value):  # raw 8-bit bytes in a header: the email package keeps them as surrogates
            try:
                value = value.encode("utf-8", "surrogateescape").decode("utf-8")
            except UnicodeError:
                raise Refused(f"undecodable: e-mail header '{printable(name)}' is not UTF-8") from None
        values.append(value)
    return values[0] if len(values) == 1 else values or ""


def _text_of(part: Message, what: str) -> str:
    """A text part's content, decoded by its charset; HTML as visible text."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        if codecs.lookup(charset).name in _NOT_CHARSETS:
            raise LookupError(charset)
        text = payload.decode(charset)
    except LookupError:
        raise Refused(f"undecodable: e-mail {what} has an unknown charset") from None
    except UnicodeDecodeError:
        raise Refused(f"undecodable: e-mail {what} does not match its charset") from None
    if has_surrogate(text):  # UTF-7 can decode to one; no sink or provider client could encode it
        raise Refused(f"undecodable: e-mail {what} decodes to a lone UTF-16 surrogate")
    return html_text(text)[1] if part.get_content_subtype() == "html" else text


def _attachment(part: Message) -> dict[str, Any]:
    name = printable(str(part.get_filename() or ""))[:255]  # printable: no control characters or lone surrogates
    payload = part.get_payload(decode=True) if part.get_content_maintype() not in ("multipart", "message") else None
    return {
        "name": name,
        "type": printable(part.get_content_type())[:255],
        "size": len(payload) if isinstance(payload, bytes) else None,
    }


Walked = list[tuple[Message, tuple[Message, ...]]]


def _attachments(parts: Walked, body: Message | None) -> list[Message]:
    """Parts that are neither the body nor another rendering of it (the HTML beside a plain body)."""
    alternative = next(
        (
            a
            for p, ancestors in parts
            if p is body
            for a in reversed(ancestors)
            if a.get_content_subtype() == "alternative"
        ),
        None,
    )
    found = []
    for part, ancestors in parts:
        kind = part.get_content_maintype()
        if part is body or kind == "multipart":  # an attached message (message/rfc822) is one attachment: not walked
            continue
        if kind == "text" and part.get_filename() is None and alternative is not None and alternative in ancestors:
            continue
        found.append(part)
    return found


_WROTE = re.compile(r"[ \t]*On\b.{0,300}\bwrote:\s*")
_WROTE_START, _WROTE_END = re.compile(r"[ \t]*On\b.{0,200}"), re.compile(r".{0,200}\bwrote:\s*")
_QUOTED_LINE = re.compile(r"[ \t]*>")
_ORIGINAL = re.compile(r"\s*-{2,}\s*Original Message\s*-{2,}\s*", re.IGNORECASE)


def _attribution(lines: list[str], at: int) -> int:
    """How many lines (1, or 2 when a client wrapped it) an ``On ... wrote:`` line at ``at`` takes; 0 if none."""
    if _WROTE.fullmatch(lines[at]):
        return 1
    wrapped = at + 1 < len(lines) and _WROTE_START.fullmatch(lines[at]) and _WROTE_END.fullmatch(lines[at + 1])
    return 2 if wrapped else 0


def strip_quoted(body: str) -> str:
    """``body`` without quoted replies (``quoted: strip``).

    Dropped: lines starting with ``>``; an ``On ... wrote:`` line (also wrapped over two lines), and
    when the quote after it has no ``>`` markers (an HTML reply made text), everything after it;
    Outlook's ``-----Original Message-----`` and everything after it. Inline answers between
    ``>`` lines are kept.
    """
    lines, kept, at = body.split("\n"), [], 0
    while at < len(lines):
        if _ORIGINAL.fullmatch(lines[at]):
            break
        taken = _attribution(lines, at)
        if taken:
            at += taken
            following = at
            while following < len(lines) and not lines[following].strip():
                following += 1
            if following < len(lines) and not _QUOTED_LINE.match(lines[following]):
                break  # the quote carries no markers: all the rest is the quoted message
            continue
        if not _QUOTED_LINE.match(lines[at]):
            kept.append(lines[at])
        at += 1
    return "\n".join(kept).strip()


def _fields(parts: Walked, body: Message | None, options: ParseOptions) -> tuple[dict[str, Any], str]:
    """(the document's fields, the text appended for ``attachments: text``)."""
    fields: dict[str, Any] = {name: _header(parts[0][0], name) for name in options.headers}
    listed, appended = [], []
    for part in _attachments(parts, body):
        entry = _attachment(part)
        if options.attachments == "text" and part.get_content_maintype() == "text":
            appended.append(
                f"\n\n[attachment: {entry['name'] or entry['type']}]\n{_text_of(part, 'attachment').strip()}"
            )
        listed.append(entry)
    fields["attachments"] = listed
    return fields, "".join(appended)


def from_email(
    doc_id: str, raw: bytes, source: str, options: ParseOptions = DEFAULTS, extra: dict[str, Any] | None = None
) -> Document:
    """An e-mail: ``Subject:`` + body as the text; asked-for headers, ``attachments``, ``body`` as fields.

    ``extra`` fields (a file name) come first; never raises for bad content.
    """
    try:
        message = _parse(raw)
        parts = list(_walk(message))  # refuses deep nesting before get_body recurses into it
        part = message.get_body(preferencelist=("plain", "html"))
        body = _text_of(part, "body") if part is not None else ""
        fields, appended = _fields(parts, part, options)
        subject = _header(message, "subject")
    except Refused as exc:
        return Document(doc_id, "", source, load_error=exc.reason)
    except Exception as exc:
        # the email package raises assorted errors on malformed headers and MIME trees
        return Document(doc_id, "", source, load_error=f"unreadable e-mail: {type(exc).__name__}")
    if options.quoted == "strip":
        body = strip_quoted(body)
    subject_line = (subject if isinstance(subject, str) else " ".join(subject)).strip()
    # no subject, no "Subject:" line: a message with neither subject nor body is then empty, and quarantined as such
    text = "\n\n".join(
        part for part in (f"Subject: {subject_line}" if subject_line else "", f"{body}{appended}".strip()) if part
    )
    return Document(doc_id, text, source, fields={**(extra or {}), **fields, "body": body, "format": "email"})
