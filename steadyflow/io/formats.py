"""One document from the bytes of one file or record: text, JSON, HTML (e-mail: ``email_parse``).

Every function here returns a Document, with ``load_error`` set when the bytes cannot be read,
and never raises for bad content. Decoding is strict: invalid UTF-8 (or an e-mail part that does
not match its charset) quarantines the document instead of silently replacing characters, since
a changed document would be processed and recorded as if it were the original. A leading UTF-8
byte order mark is dropped; line endings are kept as they are. Reasons never quote the document.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

from steadyflow.core.document import Document
from steadyflow.io.limits import LIMITS, ReadLimits, has_surrogate, printable

BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# a JSON string (possessive: no backtracking on long strings), an opening or a closing bracket
_NESTING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|(?P<open>[\[{])|(?P<close>[\]}])')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class Refused(ValueError):
    """A document over a bound or otherwise unreadable; ``reason`` is safe to record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(raw: bytes, what: str = "", strip_bom: bool = True) -> str:
    """``raw`` as UTF-8, by default without a leading byte order mark; Refused when it is not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = " (UTF-16 byte order mark: save it as UTF-8)" if raw.startswith(_UTF16_BOMS) else ""
        raise Refused(f"undecodable: not valid UTF-8 (byte {exc.start}{what}){hint}") from None
    return text[1:] if strip_bom and text.startswith(BOM) else text


def _deeper_than(text: str, depth: int) -> bool:
    if text.count("[") + text.count("{") <= depth:  # the common case, without a scan
        return False
    level = 0
    for match in _NESTING.finditer(text):
        kind = match.lastgroup
        if kind == "open":
            level += 1
            if level > depth:
                return True
        elif kind == "close":
            level -= 1
    return False


def _strings(value: Any) -> Any:
    """Every string (keys too) of a parsed JSON value; iterative, the depth is bounded already."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def json_or_text(text: str, limits: ReadLimits = LIMITS) -> Any:
    """``text`` read as JSON within the reading bounds (no NaN, no Infinity), or the text itself when it is not."""
    try:
        return parse_json(text, limits)
    except Refused:
        return text


def parse_json(text: str, limits: ReadLimits, unique_keys: bool = False) -> Any:
    r"""A JSON value within the limits; Refused (with a reason) otherwise.

    With ``unique_keys`` an object that names a key twice is refused (JSON keeps the last one
    silently: in a labelled dataset that is a label nobody meant).

    Depth is checked before parsing (json recurses, and a deep value breaks later readers too);
    integers are capped in digits (Python refuses to print integers over 4300 digits);
    NaN and Infinity are refused (not JSON); a lone surrogate escape (``"\ud800"``) is refused,
    because such a string cannot be encoded as UTF-8 by any sink or provider client.
    """
    text = text[1:] if text.startswith(BOM) else text
    if _deeper_than(text, limits.json_depth):
        raise Refused(f"JSON nested deeper than {limits.json_depth} levels")

    def integer(literal: str) -> int:
        if len(literal.lstrip("-")) > limits.int_digits:
            raise Refused(f"JSON integer longer than {limits.int_digits} digits")
        return int(literal)

    def constant(name: str) -> Any:
        raise Refused(f"invalid JSON: {name} is not a JSON value")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for key, item in pairs:
            if key in value:
                raise Refused(f"key '{printable(key[:80])}' appears twice in one object")
            value[key] = item
        return value

    try:
        hook = unique if unique_keys else None
        value = json.loads(text, parse_int=integer, parse_constant=constant, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise Refused(f"invalid JSON: line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # deeper than the scan saw (it is conservative, so only in theory)
        raise Refused(f"JSON nested deeper than {limits.json_depth} levels") from None
    if _SURROGATE_ESCAPE.search(text) and any(has_surrogate(s) for s in _strings(value)):
        raise Refused("JSON has a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return value


def from_json(doc_id: str, raw: bytes, source: str, limits: ReadLimits) -> Document:
    """A .json file: an object whose ``text`` (or ``body``) is the text; every key is a field."""
    try:
        value = parse_json(decode(raw), limits)
    except Refused as exc:
        return Document(doc_id, "", source, load_error=exc.reason)
    if not isinstance(value, dict):
        return Document(doc_id, "", source, load_error="JSON document is not an object")
    body = value.get("text", value.get("body"))
    return Document(
        doc_id, str(body) if body is not None else json.dumps(value, ensure_ascii=False), source, fields=value
    )


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML page: no script, style or template content, nothing executed or fetched."""

    _HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})
    _BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "section",
            "article",
            "title",
            "pre",
            "blockquote",
        }
    )

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
