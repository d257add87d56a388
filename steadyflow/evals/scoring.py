"""Score a pipeline's outcomes against a dataset's labels: accuracy, coverage, confusion, the confidence curve.

*Accepted* means what a pipeline hands on without a person: an output that is neither
quarantined nor flagged for review. *Coverage* is the share of documents accepted; the
accuracy of what was accepted is what a user downstream experiences.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from steadyflow.evals.dataset import Dataset
from steadyflow.evals.scorers import Score, Scorer, default_scorer, scorer
from steadyflow.validators.base import get_path

THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
"""Confidence thresholds the accuracy-versus-coverage curve is printed at."""
NONE = "(none)"
"""A missing output in a confusion matrix."""


@dataclass
class Outcome:
    """What the pipeline made of one labelled document (from :class:`steadyflow.api.Processed`)."""

    id: str
    outputs: dict[str, dict[str, Any]]
    ended_by: dict[str, str]
    """Stage id -> the rung that ended it ('model:small', 'rules', 'default', 'quarantined')."""
    models: dict[str, str | None]
    confidence: dict[str, dict[str, float]]
    """Stage id -> field -> the model's probability of its answer, where the endpoint said."""
    review: bool
    quarantined: bool
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    reason: str | None = None
    """Why it was quarantined (a reason never quotes the document); None otherwise."""

    @property
    def accepted(self) -> bool:
        """Handed on without a person: not quarantined, not flagged for review."""
        return not self.quarantined and not self.review


@dataclass
class Tally:
    """Correct answers out of scored ones."""

    n: int = 0
    correct: int = 0

    def add(self, ok: bool) -> None:
        """Count one scored answer."""
        self.n += 1
        self.correct += ok

    @property
    def accuracy(self) -> float | None:
        """Share correct; None when nothing was scored."""
        return self.correct / self.n if self.n else None


@dataclass
class FieldResult:
    """One labelled field (``stage.field``) over the dataset."""

    name: str
    scorer: str
    enum: list[str] | None = None
    all: Tally = field(default_factory=Tally)
    accepted: Tally = field(default_factory=Tally)
    score_sum: float = 0.0
    by_rung: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_model: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_tag: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    confident: list[tuple[float, bool]] = field(default_factory=list)
    """(confidence, correct) for every document; 0 where no confidence was given (rules, default, none)."""
    has_confidence: bool = False
    set_counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Set scorers: true positives, predicted, expected (micro-averaged precision and recall)."""

    def add(
        self, outcome: Outcome, tags: tuple[str, ...], stage: str, score: Score, predicted: Any, expected: Any
    ) -> None:
        """Count one document's answer for this field, in every breakdown."""
        ok = score.correct
        self.all.add(ok)
        self.score_sum += score.score
        if outcome.accepted:
            self.accepted.add(ok)
        self.by_rung[outcome.ended_by.get(stage, NONE)].add(ok)
        self.by_model[outcome.models.get(stage) or outcome.ended_by.get(stage, NONE)].add(ok)
        for tag in tags:
            self.by_tag[tag].add(ok)
        if self.enum is not None:
            self.confusion[(_label(expected), _label(predicted))] += 1
        given = outcome.confidence.get(stage, {}).get(self.name.split(".", 1)[1])
        self.has_confidence = self.has_confidence or given is not None
        self.confident.append((given if given is not None else 0.0, ok))
        for i, count in enumerate((score.true_positives, score.predicted, score.expected)):
            self.set_counts[i] += count

    def curve(self, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, float | int | None]]:
        """Accuracy and coverage of the answers at or above each confidence threshold."""
        rows: list[dict[str, float | int | None]] = []
        total = len(self.confident)
        for threshold in thresholds:
            kept = [ok for p, ok in self.confident if p >= threshold]
            accuracy = sum(kept) / len(kept) if kept else None
            rows.append(
                {
                    "threshold": threshold,
                    "kept": len(kept),
                    "coverage": len(kept) / total if total else 0.0,
                    "accuracy": accuracy,
                }
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        data: dict[str, Any] = {
            "scorer": self.scorer,
            "n": self.all.n,
            "accuracy": self.all.accuracy,
            "mean_score": self.score_sum / self.all.n if self.all.n else None,
            "accepted": self.accepted.n,
            "accepted_accuracy": self.accepted.accuracy,
            "by_rung": _tallies(self.by_rung),
            "by_model": _tallies(self.by_model),
            "by_tag": _tallies(self.by_tag),
        }
        tp, predicted, expected = self.set_counts
        if predicted or expected:
            data["precision"] = tp / predicted if predicted else None
            data["recall"] = tp / expected if expected else None
        if self.enum is not None:
            data["confusion"] = self.matrix()
        if self.has_confidence:
            data["curve"] = self.curve()
        return data

    def matrix(self) -> dict[str, dict[str, int]]:
        """Expected label -> predicted label -> count (every declared label, plus any other seen)."""
        labels = list(self.enum or [])
        for pair in self.confusion:
            for label in pair:
                if label not in labels:
                    labels.append(label)
        return {
            e: {p: self.confusion[(e, p)] for p in labels}
            for e in labels
            if any(self.confusion[(e, p)] for p in labels) or e in (self.enum or [])
        }


def _label(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tallies(groups: dict[str, Tally]) -> dict[str, dict[str, float | int | None]]:
    return {k: {"n": t.n, "correct": t.correct, "accuracy": t.accuracy} for k, t in sorted(groups.items())}


@dataclass
class Evaluation:
    """Every field's results, and what the run as a whole did."""

    dataset: str
    pipeline: str
    version: str
    fields: dict[str, FieldResult]
    outcomes: list[Outcome]
    duration_s: float = 0.0
    """Wall time from the first document sent to the last one scored (the model servers' start excluded)."""

    @property
    def documents(self) -> int:
        """Documents evaluated."""
        return len(self.outcomes)

    @property
    def coverage(self) -> float:
        """Share of documents accepted (not quarantined, not sent to review)."""
        return sum(o.accepted for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``steadyflow eval --json``)."""
        latencies = sorted(o.latency_ms for o in self.outcomes)
        cost = sum(o.cost_usd for o in self.outcomes)
        return {
            "dataset": self.dataset,
            "pipeline": self.pipeline,
            "version": self.version,
            "documents": self.documents,
            "accepted": sum(o.accepted for o in self.outcomes),
            "review": sum(o.review and not o.quarantined for o in self.outcomes),
            "quarantined": sum(o.quarantined for o in self.outcomes),
            "quarantine_reasons": dict(Counter(o.reason or "" for o in self.outcomes if o.quarantined).most_common()),
            "coverage": self.coverage,
            "cost_usd": cost,
            "cost_per_document_usd": cost / self.documents if self.documents else 0.0,
            "latency_ms": {"p50": _quantile(latencies, 0.5), "p95": _quantile(latencies, 0.95)},
            "duration_s": round(self.duration_s, 3),
            "documents_per_s": round(self.documents / self.duration_s, 4) if self.duration_s else None,
            "fields": {name: result.as_dict() for name, result in self.fields.items()},
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def scorers_for(
    dataset: Dataset, schemas: dict[str, dict[str, Any]], declared: dict[str, str]
) -> dict[str, tuple[str, Scorer, list[str] | None]]:
    """For every labelled ``stage.field``: its scorer name, the scorer, and its enum labels (if any).

    The dataset's scorers win over the pipeline's (``declared``), which win over the default for the
    field's type in the stage's output schema. Raises :class:`ScorerError` for a bad name.
    """
    names = sorted(
        {f"{stage}.{name}" for e in dataset.examples for stage, fields in e.expected.items() for name in fields}
    )
    chosen: dict[str, tuple[str, Scorer, list[str] | None]] = {}
    for name in names:
        stage, field_name = name.split(".", 1)
        schema = _field_schema(schemas.get(stage, {}), field_name)
        kind = dataset.scorers.get(name) or declared.get(name) or default_scorer(schema)
        chosen[name] = (kind, scorer(kind), _enum(schema))
    return chosen


def _field_schema(schema: dict[str, Any], name: str) -> dict[str, Any]:
    current = schema
    for part in name.split("."):
        props = current.get("properties", {})
        current = props.get(part, {})
        ref = current.get("$ref")
        if isinstance(ref, str):
            current = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    return current


def _enum(schema: dict[str, Any]) -> list[str] | None:
    values = schema.get("enum")
    options = [schema, *schema.get("anyOf", [])]  # an optional field: anyOf [its schema, null]
    for option in options[1:]:
        values = values or option.get("enum")
    if values is None and any(option.get("type") == "boolean" for option in options):
        values = [True, False]
    return [_label(v) for v in values] if values else None


def evaluate(
    dataset: Dataset,
    outcomes: dict[str, Outcome],
    scorers: dict[str, tuple[str, Scorer, list[str] | None]],
    pipeline: tuple[str, str] = ("", ""),
) -> Evaluation:
    """Score every labelled field of every example against ``outcomes`` (by example id)."""
    results = {name: FieldResult(name, kind, enum) for name, (kind, _, enum) in scorers.items()}
    for example in dataset.examples:
        outcome = outcomes[example.id]
        for stage, fields in example.expected.items():
            for field_name, expected in fields.items():
                name = f"{stage}.{field_name}"
                output = None if outcome.quarantined else outcome.outputs.get(stage)
                predicted = get_path(output, field_name) if output is not None else None
                if output is None or (predicted is None and expected is not None):
                    # wrong; a set's labels still count as missed (micro-averaged recall)
                    missed = scorers[name][1](None, expected).expected
                    score = Score(0.0, False, expected=missed)
                else:
                    score = scorers[name][1](predicted, expected)
                results[name].add(outcome, example.tags, stage, score, predicted, expected)
    ordered = [outcomes[e.id] for e in dataset.examples]
    return Evaluation(str(dataset.path), pipeline[0], pipeline[1], results, ordered)
