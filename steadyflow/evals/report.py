"""An evaluation as text for the terminal, as markdown (a file, a Prefect artifact) and as HTML.

Reports hold ids, labels, scores and counts: never document text, and never the text of string
outputs (they may quote the document); enum and boolean answers appear in confusion matrices.
"""

from __future__ import annotations

from typing import Any

from steadyflow.core.markdown import page
from steadyflow.evals.scoring import Evaluation


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms")


def _rate(data: dict[str, Any]) -> str:
    rate = data.get("documents_per_s")
    return "-" if rate is None else f"{rate:.3f} documents/s over {data['duration_s']:.1f} s"


def markdown(evaluation: Evaluation) -> str:
    """The whole report as markdown: summary, accuracy per field, per rung and model, confusion, the curve."""
    data = evaluation.as_dict()
    lines = [
        f"# Evaluation of {data['pipeline']} {data['version']}",
        "",
        f"Dataset `{data['dataset']}`: {data['documents']} documents; **{data['accepted']} accepted "
        f"(coverage {_pct(data['coverage'])})**, {data['review']} for review, {data['quarantined']} quarantined. "
        f"Cost ${data['cost_usd']:.6f} (${data['cost_per_document_usd']:.6f} per document); latency per "
        f"document p50 {_ms(data['latency_ms']['p50'])}, p95 {_ms(data['latency_ms']['p95'])}; "
        f"{_rate(data)}.",
        "",
        *_reasons(data.get("quarantine_reasons") or {}),
        "| field | scorer | accuracy | mean score | accepted | accuracy of accepted |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, field in data["fields"].items():
        extra = ""
        if "precision" in field:
            extra = f" (P {_pct(field['precision'])}, R {_pct(field['recall'])})"
        lines.append(
            f"| {name} | {field['scorer']} | {_pct(field['accuracy'])}{extra} | {field['mean_score']:.3f} | "
            f"{field['accepted']} | {_pct(field['accepted_accuracy'])} |"
        )
    for name, field in data["fields"].items():
        lines += ["", f"## {name}", ""]
        lines += [*_groups("rung", field["by_rung"]), "", *_groups("model", field["by_model"])]
        if field["by_tag"]:
            lines += ["", *_groups("tag", field["by_tag"])]
        if "confusion" in field:
            lines += ["", "Confusion (rows: expected, columns: answer):", "", *_matrix(field["confusion"])]
        if "curve" in field:
            lines += ["", "Accuracy against coverage, by confidence threshold:", "", *_curve(field["curve"])]
    return "\n".join(lines) + "\n"


def _reasons(reasons: dict[str, int]) -> list[str]:
    if not reasons:
        return []
    named = "; ".join(f"{(reason or 'no reason recorded').replace('|', '/')} ({n})" for reason, n in reasons.items())
    return [f"Quarantined: {named}.", ""]


def _groups(kind: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    rows = [f"| {kind} | n | correct | accuracy |", "|---|---:|---:|---:|"]
    rows += [f"| {k} | {g['n']} | {g['correct']} | {_pct(g['accuracy'])} |" for k, g in groups.items()]
    return rows


def _matrix(matrix: dict[str, dict[str, int]]) -> list[str]:
    labels = list(next(iter(matrix.values()), {}))
    rows = ["| expected \\ answer | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    rows += [f"| {e} | " + " | ".join(str(row.get(p, 0)) for p in labels) + " |" for e, row in matrix.items()]
    return rows


def _curve(curve: list[dict[str, Any]]) -> list[str]:
    rows = ["| confidence >= | answers kept | coverage | accuracy |", "|---:|---:|---:|---:|"]
    rows += [f"| {r['threshold']:.2f} | {r['kept']} | {_pct(r['coverage'])} | {_pct(r['accuracy'])} |" for r in curve]
    return rows


def text(evaluation: Evaluation) -> str:
    """A short terminal summary: the run, then one line per field, its rungs, its curve."""
    data = evaluation.as_dict()
    out = [
        f"eval {data['pipeline']} {data['version']} on {data['dataset']}: {data['documents']} documents, "
        f"{data['accepted']} accepted (coverage {_pct(data['coverage'])}), {data['review']} for review, "
        f"{data['quarantined']} quarantined; cost ${data['cost_usd']:.6f}; latency p50 "
        f"{_ms(data['latency_ms']['p50'])}, p95 {_ms(data['latency_ms']['p95'])}; {_rate(data)}"
    ]
    reasons = data.get("quarantine_reasons") or {}
    if reasons:
        named = "; ".join(f"{reason or 'no reason recorded'} ({n})" for reason, n in reasons.items())
        out.append(f"  quarantined: {named}")
    for name, field in data["fields"].items():
        out.append(
            f"  {name} ({field['scorer']}): accuracy {_pct(field['accuracy'])}, accepted {field['accepted']} "
            f"at {_pct(field['accepted_accuracy'])}"
        )
        rungs = ", ".join(f"{k} {_pct(g['accuracy'])} of {g['n']}" for k, g in field["by_rung"].items())
        out.append(f"    by rung: {rungs}")
        if len(field["by_model"]) > 1:
            out.append(
                "    by model: "
                + ", ".join(f"{k} {_pct(g['accuracy'])} of {g['n']}" for k, g in field["by_model"].items())
            )
        if "confusion" in field:
            out += ["    " + line for line in _plain_matrix(field["confusion"])]
        if "curve" in field:
            points = [r for r in field["curve"] if r["kept"]]
            out.append(
                "    confidence >= t: "
                + ", ".join(
                    f"{r['threshold']:.2f} keeps {_pct(r['coverage'])} at {_pct(r['accuracy'])}" for r in points
                )
            )
    return "\n".join(out)


def _plain_matrix(matrix: dict[str, dict[str, int]]) -> list[str]:
    labels = list(next(iter(matrix.values()), {}))
    width = max([len("expected"), *(len(label) for label in labels)])
    head = "expected".ljust(width) + "  " + "  ".join(label.rjust(max(len(label), 3)) for label in labels)
    body = [
        e.ljust(width) + "  " + "  ".join(str(row.get(p, 0)).rjust(max(len(p), 3)) for p in labels)
        for e, row in matrix.items()
    ]
    return [head, *body]


def as_html(evaluation: Evaluation) -> str:
    """The markdown report as a standalone HTML page (escaped; tables as tables)."""
    return page(markdown(evaluation), "evaluation")
