"""Drift shown: a markdown report with charts (``compare --report``, the run artifact) and lines for a terminal."""

from __future__ import annotations

from collections import Counter
from typing import Any

from steadyflow.audit import charts
from steadyflow.audit.drift import Profile, Shift, quantile

_QUANTILES = (0.1, 0.5, 0.9)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _shares(counts: Counter[str], keys: list[str]) -> list[float]:
    n = sum(counts.values())
    return [counts.get(k, 0) / n if n else 0.0 for k in keys]


def _cuts(counts: Counter[float]) -> list[float]:
    return [quantile(counts, q) or 0.0 for q in _QUANTILES]


def chart_rungs(profiles: list[tuple[str, Profile]]) -> str:
    """Documents by the rung that ended them, per stage: shares of each run side by side."""
    keys = sorted({(s, r) for _, p in profiles for s, c in p.ended.items() for r in c})
    rows = [f"{stage}: {rung}" for stage, rung in keys]
    series = [(name, [_share(p.ended[s], r) for s, r in keys]) for name, p in profiles]
    return charts.image(
        "documents by rung", charts.bars("Documents by rung (share of documents)", rows, series, charts.share)
    )


def _share(counts: Counter[str], key: str) -> float:
    n = sum(counts.values())
    return counts.get(key, 0) / n if n else 0.0


def chart_cost(profiles: list[tuple[str, Profile]]) -> str:
    """Cost per document: p10, p50, p90 of each run side by side."""
    rows = [f"p{int(q * 100)}" for q in _QUANTILES]
    series = [(name, _cuts(p.cost)) for name, p in profiles]
    return charts.image("cost per document", charts.bars("Cost per document (USD)", rows, series, charts.usd))


def chart_fields(profiles: list[tuple[str, Profile]]) -> list[str]:
    """One chart per output field: shares per value (enums, booleans), or p10/p50/p90 (numbers, lengths)."""
    out = []
    names = sorted({n for _, p in profiles for n in p.values})
    for name in names:
        keys = sorted({k for _, p in profiles for k in p.values[name]})
        series = [(run, _shares(p.values[name], keys)) for run, p in profiles]
        out.append(charts.image(name, charts.bars(f"{name}: share per value", keys, series, charts.share)))
    for kind, title in (("numbers", "value"), ("lengths", "length")):
        for name in sorted({n for _, p in profiles for n in getattr(p, kind)}):
            rows = [f"p{int(q * 100)}" for q in _QUANTILES]
            series = [(run, _cuts(getattr(p, kind)[name])) for run, p in profiles]
            out.append(charts.image(name, charts.bars(f"{name}: {title} quantiles", rows, series)))
    return out


def _side(shift: Shift, side: dict[str, Any]) -> str:
    if shift.measure == "psi":
        if "shares" in side:
            return ", ".join(f"{k} {v * 100:.0f}%" for k, v in side["shares"].items()) or "-"
        return f"p50 {side.get('p50')}, p90 {side.get('p90')}"
    if shift.measure == "rate":
        return "-" if side.get("rate") is None else f"{side['rate'] * 100:.1f}% of {side['n']}"
    value = next((v for k, v in side.items() if k != "n"), None)
    if value is None:
        return "-"
    return charts.usd(value) if shift.kind == "cost" else f"{value:.0f} ms"


def _value(shift: Shift) -> str:
    if shift.value is None:
        return "-"
    if shift.measure == "rate":
        return f"{shift.value * 100:+.1f} pt"
    if shift.measure == "ratio":
        return f"{shift.value:.2f}x"
    return f"{shift.value:.3f}"


def _limit(shift: Shift) -> str:
    return f"{shift.threshold * 100:.0f} pt" if shift.measure == "rate" else f"{shift.threshold:g}"


def _bound(shift: Shift) -> str:
    if shift.noise is None:
        return "-"
    return f"{shift.noise * 100:.1f} pt" if shift.measure == "rate" else f"{shift.noise:.3f}"


def table(shifts: list[Shift]) -> list[str]:
    """Every compared quantity as a markdown table, flagged ones first, then those within chance of flagging."""
    lines = [
        "| flag | what | measure | baseline | current | shift | threshold | chance reaches |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for s in sorted(shifts, key=lambda s: (not s.flagged, not s.unsure, s.kind, s.name)):
        flag = "**shifted**" if s.flagged else "within chance" if s.unsure else ""
        lines.append(
            f"| {flag} | {_md(s.label)} | {s.measure} | {_md(_side(s, s.baseline))} | {_md(_side(s, s.current))} "
            f"| {_value(s)} | {_limit(s)} | {_bound(s)} |"
        )
    return lines


def markdown(base: Profile, cur: Profile, shifts: list[Shift], names: tuple[str, str]) -> str:
    """A whole comparison: what shifted, charts of both sides, and the table of every quantity."""
    flagged = [s for s in shifts if s.flagged]
    profiles = [(names[0], base), (names[1], cur)]
    lines = [
        f"# Drift: {_md(names[1])} against {_md(names[0])}",
        "",
        f"{base.documents} documents against {cur.documents}. "
        + (
            f"**{len(flagged)} shifted:** " + ", ".join(_md(s.label) for s in flagged) + "."
            if flagged
            else "Nothing shifted beyond its threshold and chance."
        ),
        "",
        chart_rungs(profiles),
        "",
        chart_cost(profiles),
        "",
        *[line for chart in chart_fields(profiles) for line in (chart, "")],
        *table(shifts),
    ]
    return "\n".join(lines) + "\n"


def lines(shifts: list[Shift]) -> list[str]:
    """For a terminal: a line per flagged quantity, one per quantity within chance, and a count of the rest."""
    out = []
    for s in shifts:
        if s.flagged:
            out.append(
                f"shifted  {s.label}: {s.measure} {_value(s)} (threshold {_limit(s)}); "
                f"{_side(s, s.baseline)} -> {_side(s, s.current)}"
            )
    for s in shifts:
        if s.unsure:
            out.append(
                f"unsure   {s.label}: {s.measure} {_value(s)} passes {_limit(s)}, but chance reaches {_bound(s)} "
                "at these documents: more documents would tell"
            )
    steady = sum(1 for s in shifts if not s.flagged and not s.unsure)
    out.append(f"steady   {steady} other quantities within their thresholds")
    return out
