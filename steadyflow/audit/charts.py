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
    top = max((v for _, values in series for v in values), default=0.0) or 1.0
    per_row = max(_ROW, (_BAR + 3) * len(series) + 8)
    legend_h = 18 if len(series) > 1 else 0
    height = 34 + legend_h + per_row * len(rows) + 8
    width = _LABEL_W + _PLOT_W + _VALUE_W
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="20" font-size="14" font-weight="bold" fill="#1f2328">{escape(title)}</text>',
    ]
    if legend_h:
        x = 8
        for i, (name, _) in enumerate(series):
            parts.append(f'<rect x="{x}" y="30" width="10" height="10" fill="{palette[i % len(palette)]}"/>')
            parts.append(f'<text x="{x + 14}" y="39" fill="#1f2328">{escape(name)}</text>')
            x += 24 + 7 * len(name)
    y0 = 34 + legend_h
    for r, row in enumerate(rows):
        y = y0 + r * per_row
        label = row if len(row) <= 30 else row[:29] + "…"
        parts.append(f'<text x="8" y="{y + per_row / 2 + 4:.1f}" fill="#1f2328">{escape(label)}</text>')
        for i, (_, values) in enumerate(series):
            value = values[r] if r < len(values) else 0.0
            w = max(0.0, value / top * (_PLOT_W - 10))
            by = y + 4 + i * (_BAR + 3)
            colour = palette[i % len(palette)]
            parts.append(f'<rect x="{_LABEL_W}" y="{by}" width="{w:.1f}" height="{_BAR}" fill="{colour}"/>')
            parts.append(
                f'<text x="{_LABEL_W + w + 4:.1f}" y="{by + _BAR}" font-size="10" fill="#1f2328">'
                f"{escape(shown(value))}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


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
