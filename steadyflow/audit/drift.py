"""Drift between runs: whether outputs, rungs, checks, review, cost or latency shifted, beyond chance.

A :class:`Profile` counts one run (or several pooled as a baseline) from its decision records in flat
memory: every distribution is a counter (records keep a number on a grid 5% wide and a text's exact
length, see ``records.fingerprint``; cost and latency go on the 5% grid here). :func:`compare` puts
two profiles side by side. Distributions and rates are flagged when a shift is both *large* (a
population stability index, a difference of rates, over a threshold) and *unlikely to be chance* at
the documents counted: two runs of the same inputs differ a little, and only a shift beyond that
noise is flagged. Cost and latency are flagged on their rise alone (a ratio, and for latency a floor
in milliseconds), since a run's cost and speed are what they are, not a sample.

PSI = sum over bins of (q - p) * ln(q / p), counts smoothed by 0.5. For two samples of the same
distribution n_a * n_b / (n_a + n_b) * PSI is about chi-square with (bins - 1) degrees of freedom, so
a PSI is flagged only above that distribution's 99.9th percentile as well as above the threshold.
Rates use a two-proportion z test (|z| >= 3.29, p < 0.001) the same way. A baseline of several runs
of the same documents counts each document once per run: its noise is taken at one run's documents.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from steadyflow.core.vocabulary import ended_by

Z_999 = 3.29
"""Two-sided z for p < 0.001."""
_Z_CHI2 = 3.09
"""One-sided z of the 99.9th percentile, for Wilson-Hilferty's chi-square quantile."""
_STEP = math.log(1.05)


@dataclass
class Thresholds:
    """How large a shift must be to be flagged (it must also be beyond chance at the documents counted)."""

    psi: float = 0.2
    """Population stability index of a distribution (0.1: a shift worth a look; 0.25: a major one)."""
    rate: float = 0.05
    """Absolute change of a check's failure rate or of the review share (0.05: five points)."""
    cost: float = 0.25
    """Relative rise of the mean cost per document (0.25: a quarter more)."""
    latency: float = 0.5
    """Relative rise of the p50 or p95 latency per document (0.5: half as long again)."""
    latency_ms: float = 500.0
    """...and by at least this many milliseconds: a busy machine alone moves tens of milliseconds by half."""
    min_documents: int = 30
    """Fewer documents on either side: shown, never flagged."""


def grid(value: float) -> float:
    """``value`` on a grid 5% wide (as records keep numbers), so a distribution is a counter."""
    if value <= 0:
        return 0.0
    return float(f"{math.exp(round(math.log(value) / _STEP) * _STEP):.4g}")


@dataclass
class Profile:
    """What drift compares of one run, or of several pooled: every distribution a counter."""

    runs: list[str] = field(default_factory=list)
    documents: int = 0
    review: int = 0
    ended: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    """Stage -> documents by the rung that ended them ('quarantined' included)."""
    checked: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    """Stage -> check -> documents it gave a verdict on."""
    failed: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    """Stage -> check -> documents it failed."""
    values: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    """'stage.field' -> counts per value, for enum and boolean fields."""
    numbers: dict[str, Counter[float]] = field(default_factory=lambda: defaultdict(Counter))
    """'stage.field' -> counts per value on the 5% grid, for number fields."""
    lengths: dict[str, Counter[float]] = field(default_factory=lambda: defaultdict(Counter))
    """'stage.field' -> counts per length, for text and list fields."""
    cost: Counter[float] = field(default_factory=Counter)
    """USD per document (every stage, every attempt) on the 5% grid."""
    latency: Counter[float] = field(default_factory=Counter)
    """A document's own milliseconds over its stages, on the 5% grid."""

    def add_document(self, records: list[dict[str, Any]]) -> None:
        """Count one document from its records (one per stage it reached)."""
        self.documents += 1
        self.review += int(any(r["review"] for r in records) and all(r["status"] != "quarantined" for r in records))
        self.cost[grid(sum(r["cost_usd"] for r in records))] += 1
        self.latency[grid(sum(r["latency_ms"] for r in records))] += 1
        for record in records:
            stage = record["stage_id"]
            self.ended[stage][ended_by(record["status"], record["rung_label"])] += 1
            for check in {v["check"] for v in record["verdicts"]}:
                self.checked[stage][check] += 1
            for check in {v["check"] for v in record["verdicts"] if not v["passed"]}:
                self.failed[stage][check] += 1
            for name, kept in (record.get("outputs") or {}).items():
                self._field(f"{stage}.{name}", kept)

    def _field(self, name: str, kept: dict[str, Any]) -> None:
        if "value" in kept:
            value = kept["value"]
            self.values[name][_label(value)] += 1
        elif "approx" in kept:
            self.numbers[name][float(kept["approx"])] += 1
        elif "length" in kept:
            self.lengths[name][float(kept["length"])] += 1


def _label(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def profile(runs: list[str], rows: Iterable[dict[str, Any]]) -> Profile:
    """The profile of ``rows``: records of ``runs`` ordered by run and document (``DecisionLog.profile_rows``)."""
    found = Profile(runs=list(runs))
    for records in _by_document(rows):
        found.add_document(records)
    return found


def _by_document(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    current: tuple[str, str] | None = None
    batch: list[dict[str, Any]] = []
    for row in rows:
        key = (row["run_id"], row["doc_id"])
        if key != current and batch:
            yield batch
            batch = []
        current = key
        batch.append(row)
    if batch:
        yield batch


@dataclass
class Shift:
    """One compared quantity: its measure, both sides, and whether the shift is flagged."""

    kind: str
    """'field', 'number', 'length', 'rung', 'presence' (of a stage or field), 'check', 'review', 'cost', 'latency'."""
    name: str
    measure: str
    """'psi', 'rate' (absolute change) or 'ratio' (current / baseline)."""
    value: float | None
    threshold: float
    flagged: bool
    baseline: dict[str, Any]
    current: dict[str, Any]
    noise: float | None = None
    """The value chance alone stays under at these counts (p < 0.001); a flag needs both."""

    @property
    def label(self) -> str:
        """What is compared, e.g. 'field triage.category', 'cost mean', 'review'."""
        return self.name if self.name.startswith(self.kind) else f"{self.kind} {self.name}"

    @property
    def unsure(self) -> bool:
        """Past its threshold, but not flagged: within what chance gives at these documents (or too few of them)."""
        if self.flagged or self.value is None or self.measure == "ratio":
            return False
        return abs(self.value) >= self.threshold


def psi(before: Counter[Any], after: Counter[Any], bins: list[Any] | None = None) -> tuple[float, int]:
    """(PSI, bins) of two counters over the same categories (``bins``: default, every value seen)."""
    keys = bins if bins is not None else sorted(set(before) | set(after), key=str)
    n_a, n_b = sum(before.values()), sum(after.values())
    if not keys or not n_a or not n_b:
        return 0.0, len(keys)
    total = 0.0
    for key in keys:
        p = (before.get(key, 0) + 0.5) / (n_a + 0.5 * len(keys))
        q = (after.get(key, 0) + 0.5) / (n_b + 0.5 * len(keys))
        total += (q - p) * math.log(q / p)
    return total, len(keys)


def psi_noise(bins: int, n_a: int, n_b: int) -> float:
    """The PSI that two samples of one distribution stay under with p = 0.999 (Wilson-Hilferty's chi-square)."""
    k = max(1, bins - 1)
    chi2 = k * (1 - 2 / (9 * k) + _Z_CHI2 * math.sqrt(2 / (9 * k))) ** 3
    return chi2 * (1 / max(1, n_a) + 1 / max(1, n_b))


def quantile(counts: Counter[float], q: float) -> float | None:
    """The ``q`` quantile of a counter of values."""
    n = sum(counts.values())
    if not n:
        return None
    rank, seen = max(1, math.ceil(q * n)), 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return None


def _quantiles(counts: Counter[float]) -> dict[str, Any]:
    return {"n": sum(counts.values()), **{f"p{int(q * 100)}": quantile(counts, q) for q in (0.1, 0.5, 0.9, 0.95)}}


def _decile_bins(before: Counter[float], after: Counter[float]) -> tuple[Counter[int], Counter[int], list[int]]:
    """Both counters binned at the baseline's deciles, for a PSI of a numeric distribution."""
    edges = sorted({v for v in (quantile(before, i / 10) for i in range(1, 10)) if v is not None})

    def binned(counts: Counter[float]) -> Counter[int]:
        out: Counter[int] = Counter()
        for value, n in counts.items():
            out[sum(1 for edge in edges if value > edge)] += n
        return out

    return binned(before), binned(after), list(range(len(edges) + 1))


def _shares(counts: Counter[str]) -> dict[str, Any]:
    n = sum(counts.values())
    return {"n": n, "shares": {k: round(v / n, 4) for k, v in sorted(counts.items())} if n else {}}


def _rate(failed: int, seen: int) -> dict[str, Any]:
    return {"n": seen, "rate": round(failed / seen, 4) if seen else None}


def _rate_noise(p_a: float, n_a: int, p_b: float, n_b: int) -> float:
    pooled = (p_a * n_a + p_b * n_b) / max(1, n_a + n_b)
    return Z_999 * math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / max(1, n_a) + 1 / max(1, n_b)))


def compare(base: Profile, cur: Profile, limits: Thresholds) -> list[Shift]:
    """Every compared quantity of ``cur`` against ``base``, flagged ones marked (see the module's docstring)."""
    enough = min(base.documents, cur.documents) >= limits.min_documents
    per_a, per_b = max(1, len(base.runs)), max(1, len(cur.runs))  # runs pooled: noise at one run's documents
    shifts: list[Shift] = []

    def distribution(kind: str, name: str, before: Counter[Any], after: Counter[Any], shown: Any) -> None:
        if kind in ("field", "rung"):
            value, bins = psi(before, after)
        else:
            b, a, keys = _decile_bins(before, after)
            value, bins = psi(b, a, keys)
        noise = psi_noise(bins, sum(before.values()) // per_a, sum(after.values()) // per_b)
        flagged = enough and value >= limits.psi and value >= noise
        shifts.append(
            Shift(kind, name, "psi", round(value, 4), limits.psi, flagged, shown(before), shown(after), round(noise, 4))
        )

    def rate(kind: str, name: str, a: tuple[int, int], b: tuple[int, int]) -> None:
        shifts.append(_rate_shift(kind, name, a, b, limits, enough, (per_a, per_b)))

    for stage in sorted(set(base.ended) | set(cur.ended)):
        distribution("rung", stage, base.ended[stage], cur.ended[stage], _shares)
        # a stage documents no longer reach (or newly reach) has nothing to compare in its shares
        rate("presence", stage, (sum(base.ended[stage].values()), base.documents),
             (sum(cur.ended[stage].values()), cur.documents))  # fmt: skip
    for kind, name, before, after in _fields(base, cur):
        distribution(kind, name, before, after, _shares if kind == "field" else _quantiles)
        rate("presence", name, (sum(before.values()), base.documents), (sum(after.values()), cur.documents))
    for stage in sorted(set(base.checked) | set(cur.checked)):
        for check in sorted(set(base.checked[stage]) | set(cur.checked[stage])):
            rate("check", f"{stage}.{check}", (base.failed[stage][check], base.checked[stage][check]),
                 (cur.failed[stage][check], cur.checked[stage][check]))  # fmt: skip
    rate("review", "review", (base.review, base.documents), (cur.review, cur.documents))
    shifts += _rise("cost", base.cost, cur.cost, limits.cost, 0.0, enough, ("mean",))
    shifts += _rise("latency", base.latency, cur.latency, limits.latency, limits.latency_ms, enough, ("p50", "p95"))
    return shifts


def _fields(base: Profile, cur: Profile) -> Iterator[tuple[str, str, Counter[Any], Counter[Any]]]:
    """(kind, 'stage.field', baseline counts, current counts) of every output field either side has."""
    for kind, attribute in (("field", "values"), ("number", "numbers"), ("length", "lengths")):
        before, after = getattr(base, attribute), getattr(cur, attribute)
        for name in sorted(set(before) | set(after)):
            yield kind, name, before[name], after[name]


def _rate_shift(
    kind: str,
    name: str,
    a: tuple[int, int],
    b: tuple[int, int],
    limits: Thresholds,
    enough: bool,
    per: tuple[int, int] = (1, 1),
) -> Shift:
    """A rate's change, ``a`` and ``b`` as (count, out of); ``per``: runs pooled on each side."""
    (fail_a, n_a), (fail_b, n_b) = a, b
    before, after = _rate(fail_a, n_a), _rate(fail_b, n_b)
    if not n_a or not n_b:
        return Shift(kind, name, "rate", None, limits.rate, False, before, after)
    p_a, p_b = fail_a / n_a, fail_b / n_b
    noise = _rate_noise(p_a, max(1, n_a // per[0]), p_b, max(1, n_b // per[1]))
    change = p_b - p_a
    flagged = enough and abs(change) >= limits.rate and abs(change) >= noise
    return Shift(kind, name, "rate", round(change, 4), limits.rate, flagged, before, after, round(noise, 4))


def _mean(counts: Counter[float]) -> float | None:
    n = sum(counts.values())
    return sum(v * c for v, c in counts.items()) / n if n else None


def _rise(
    kind: str,
    before: Counter[float],
    after: Counter[float],
    limit: float,
    floor: float,
    enough: bool,
    stats: tuple[str, ...],
) -> list[Shift]:
    """Cost or latency: flagged when a statistic rises by ``limit`` and by ``floor`` (a fall is shown, not flagged)."""
    out = []
    for stat in stats:
        if stat == "mean":
            a, b = _mean(before), _mean(after)
        else:
            a, b = quantile(before, int(stat[1:]) / 100), quantile(after, int(stat[1:]) / 100)
        ratio = rise = None
        if a and b is not None:
            ratio, rise = b / a, b - a
        limit = max(limit, 0.1)  # the grid is 5% wide: a rise under 1.1x can be the grid alone
        flagged = enough and ratio is not None and rise is not None and ratio >= 1 + limit and rise >= floor
        out.append(
            Shift(kind, f"{kind} {stat}", "ratio", round(ratio, 4) if ratio is not None else None, 1 + limit, flagged,
                  {"n": sum(before.values()), stat: a}, {"n": sum(after.values()), stat: b})
        )  # fmt: skip
    return out


def report(base: Profile, cur: Profile, shifts: list[Shift], limits: Thresholds) -> dict[str, Any]:
    """The comparison as plain JSON types: what ``compare --json`` prints."""
    return {
        "baseline": {"runs": base.runs, "documents": base.documents},
        "current": {"runs": cur.runs, "documents": cur.documents},
        "thresholds": asdict(limits),
        "flagged": [s.label for s in shifts if s.flagged],
        "unsure": [s.label for s in shifts if s.unsure],
        "shifts": [asdict(s) for s in shifts],
    }
