"""A replay as text for the terminal and as markdown (a file, a Prefect artifact); HTML via the eval report's page.

Like every report here it holds field names, enum and boolean values, counts, shares and scores,
never document or output text; inputs are named by key and place (``line 12``), never by path.
"""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms")


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _headline(data: dict[str, Any]) -> str:
    old, new = data["recorded_pipeline"], data["candidate_pipeline"]
    inputs = data["inputs"]
    skipped = len(inputs["changed"]) + len(inputs["missing"]) + inputs["unverifiable"] + inputs["not_comparable"]
    return (
        f"replay of run {data['run_id']} ({old['pipeline']} {old['version']}) through {new['file']} "
        f"({new['pipeline']} {new['version']}): {data['documents']} of {data['sampled']} documents compared"
        + (f", {skipped} not used" if skipped else "")
    )


def _input_lines(inputs: dict[str, Any]) -> list[str]:
    lines = []
    if inputs["changed"]:
        lines.append(
            f"inputs changed since the run (not used): {len(inputs['changed'])}: {', '.join(inputs['changed'][:10])}"
        )
    if inputs["missing"]:
        lines.append(
            f"inputs missing from the source (not used): {len(inputs['missing'])}: {', '.join(inputs['missing'][:10])}"
        )
    if inputs["unverifiable"]:
        lines.append(f"recorded before document hashes were kept (not used): {inputs['unverifiable']}")
    if inputs["not_comparable"]:
        lines.append(f"recorded outputs unknown (no fingerprint, sink rewritten since): {inputs['not_comparable']}")
    return lines


def _cost_rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    old, new = data["recorded"], data["candidate"]
    return [
        ("cost per document", _usd(old["cost_per_document_usd"]), _usd(new["cost_per_document_usd"])),
        ("cost in total", _usd(old["cost_usd"]), _usd(new["cost_usd"])),
        ("tokens per document", _num(old["tokens_per_document"]), _num(new["tokens_per_document"])),
        ("latency p50", _ms(old["latency_ms"]["p50"]), _ms(new["latency_ms"]["p50"])),
        ("latency p95", _ms(old["latency_ms"]["p95"]), _ms(new["latency_ms"]["p95"])),
    ]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _field_line(name: str, field: dict[str, Any]) -> str:
    line = f"{name}: {field['changed']} of {field['compared']} changed ({_pct(field['changed_share'])})"
    if field["transitions"]:
        line += "; " + ", ".join(f"{k} ({n})" for k, n in list(field["transitions"].items())[:6])
    if field["similarity"] is not None:
        line += f"; similarity of changed text {field['similarity']:.2f} over {field['similarity_known']}"
    return line


def text(data: dict[str, Any]) -> str:
    """A terminal summary: headline, inputs not used, fields, rungs, quarantines, cost and latency, accuracy."""
    out = [_headline(data), *("  " + line for line in _input_lines(data["inputs"]))]
    out += ["  " + _field_line(name, field) for name, field in data["fields"].items()]
    if data["rung_changes"]:
        out.append("  rungs: " + ", ".join(f"{k} ({n})" for k, n in data["rung_changes"].items()))
    out.append(f"  quarantined: {data['newly_quarantined']} newly, {data['no_longer_quarantined']} no longer")
    out += [f"  {what}: {old} -> {new}" for what, old, new in _cost_rows(data)]
    for name, acc in data["accuracy"].items():
        out.append(
            f"  accuracy of {name} against {data['labels']}: recorded {_pct(acc['recorded'])} "
            f"({acc['recorded_scored']} scored), candidate {_pct(acc['candidate'])} ({acc['scored']} scored)"
        )
    return "\n".join(out)


def markdown(data: dict[str, Any]) -> str:
    """The whole replay as markdown."""
    lines = [f"# Replay of run {data['run_id']}", "", _headline(data) + ".", ""]
    lines += [line + "." for line in _input_lines(data["inputs"])]
    lines += ["", "| field | compared | changed | share | transitions | similarity of changed text |"]
    lines.append("|---|---:|---:|---:|---|---:|")
    for name, f in data["fields"].items():
        moves = ", ".join(f"{k} ({n})" for k, n in f["transitions"].items()) or "-"
        similar = "-" if f["similarity"] is None else f"{f['similarity']:.2f} ({f['similarity_known']})"
        lines.append(
            f"| {name} | {f['compared']} | {f['changed']} | {_pct(f['changed_share'])} | {moves} | {similar} |"
        )
    lines += [
        "",
        f"Newly quarantined: {data['newly_quarantined']}; no longer quarantined: {data['no_longer_quarantined']}.",
        "",
    ]
    if data["rung_changes"]:
        lines += ["| rung change | documents |", "|---|---:|"]
        lines += [f"| {k} | {n} |" for k, n in data["rung_changes"].items()]
        lines.append("")
    lines += ["| | recorded | candidate |", "|---|---:|---:|"]
    lines += [f"| {what} | {old} | {new} |" for what, old, new in _cost_rows(data)]
    if data["accuracy"]:
        lines += ["", f"Accuracy against {data['labels']}:", ""]
        lines += ["| field | recorded | candidate | scored |", "|---|---:|---:|---:|"]
        lines += [
            f"| {name} | {_pct(a['recorded'])} | {_pct(a['candidate'])} | {a['scored']} |"
            for name, a in data["accuracy"].items()
        ]
    if data.get("failed"):
        lines += ["", "**Gates failed:** " + "; ".join(data["failed"])]
    return "\n".join(lines) + "\n"
