"""Small SVG bar charts for the run artifact and ``compare``, as markdown images (data URIs): no plotting library.

Each chart is rows of horizontal bars, one bar per series (a run, or a baseline and a current run side
by side), values written at the bars' ends. The SVG has its own white background, so it reads on the
Prefect UI's dark theme too, and uses presentation attributes only (the UI's sanitiser strips styles).
Labels are pipeline names, rung names, enum values and numbers: never document text.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

COLOURS = ("#8a96a3", "#e8730c", "#2f7ebc")
"""Baseline grey, current orange, a third series blue."""
_ROW = 22
_BAR = 8
_LABEL_W = 190
_PLOT_W = 330
_VALUE_W = 80


def bars(
    title: str,
    rows: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    shown: Callable[[float], str] = lambda v: f"{v:g}",
) -> str:
    """An SVG chart: for each of ``rows``, one bar per ``(name, values)`` series, scaled to the largest value.

    The last series is drawn in the current run's colour, those before it as baselines.
    """
    palette = COLOURS[max(0, 2 - len(series)) :]
    top = max((abs(v) for _, values in series for v in values), default=0.0) or 1.0
    per_row = max(_ROW, (_BAR + 3) * len(series) + 8)
    legend_h = 18 if len(series) > 1 else 0
    height = 34 + legend_h + per_row * len(rows) + 8
    width = _LABEL_W + _PLOT_W + _VALUE_W
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="20" font-size="14" font-weight="bold" fill="#1f2328">{_text(title, 70)}</text>',
    ]
    if legend_h:
        x = 8
        for i, (name, _) in enumerate(series):
            parts.append(f'<rect x="{x}" y="30" width="10" height="10" fill="{palette[i % len(palette)]}"/>')
            label = _text(name, 40)
            parts.append(f'<text x="{x + 14}" y="39" fill="#1f2328">{label}</text>')
            x += 24 + 7 * min(len(name), 40)
    y0 = 34 + legend_h
    for r, row in enumerate(rows):
        y = y0 + r * per_row
        parts.append(f'<text x="8" y="{y + per_row / 2 + 4:.1f}" fill="#1f2328">{_text(row, 30)}</text>')
        for i, (_, values) in enumerate(series):
            value = values[r] if r < len(values) else 0.0
            w = abs(value) / top * (_PLOT_W - 10)  # a negative value's bar is as long as its size; its label says so
            by = y + 4 + i * (_BAR + 3)
            colour = palette[i % len(palette)]
            parts.append(f'<rect x="{_LABEL_W}" y="{by}" width="{w:.1f}" height="{_BAR}" fill="{colour}"/>')
            parts.append(
                f'<text x="{_LABEL_W + w + 4:.1f}" y="{by + _BAR}" font-size="10" fill="#1f2328">'
                f"{_text(shown(value), 20)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _text(text: str, most: int) -> str:
    """``text`` as SVG text: cut to ``most`` characters, XML's forbidden control characters dropped, escaped."""
    text = "".join(c for c in text if c >= " " or c in "\t\n")
    return escape(text if len(text) <= most else text[: most - 1] + "…")


def image(alt: str, svg: str) -> str:
    """The chart as a markdown image (an SVG data URI), shown inline by the Prefect UI and by browsers."""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![{alt.replace(']', ')')}](data:image/svg+xml;base64,{data})"


def share(value: float) -> str:
    """A share as a percentage."""
    return f"{value * 100:.1f}%"


def usd(value: float) -> str:
    """USD with enough digits for a cost per document."""
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"
