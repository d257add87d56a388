"""Write outputs (JSONL or CSV) and quarantined documents (JSONL), one row per document."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any

from steadyflow.stages.document import Document


def output_row(doc: Document) -> dict[str, Any]:
    """The sink row of a document that every stage accepted."""
    return {"id": doc.id, "source": doc.source, "review": doc.review, "rungs": doc.rungs, "outputs": doc.outputs}


def quarantine_row(doc: Document) -> dict[str, Any]:
    """The quarantine row: which stage refused the document, and why. No document text."""
    stage, reason = doc.quarantined or ("", "")
    return {"id": doc.id, "source": doc.source, "stage": stage, "reason": reason}


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"id": row["id"], "source": row["source"], "review": row["review"]}
    for stage, rung in row["rungs"].items():
        flat[f"{stage}._rung"] = rung
    for stage, output in row["outputs"].items():
        for key, value in output.items():
            flat[f"{stage}.{key}"] = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
    return flat


class Sink:
    """Appends rows to a JSONL or CSV file; flushes after every batch."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("w", encoding="utf-8", newline="")
        self._csv: csv.DictWriter[str] | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and flush them to disk."""
        for row in rows:
            if self.kind == "csv":
                flat = _flatten(row) if "outputs" in row else row
                if self._csv is None:
                    self._csv = csv.DictWriter(self._handle, fieldnames=list(flat), extrasaction="ignore")
                    self._csv.writeheader()
                self._csv.writerow(flat)
            else:
                self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()
