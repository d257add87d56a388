"""What the audit trail costs: appending decision records in chunks, and verifying the whole chain.

    .venv/bin/python benchmarks/audit.py --json [--records 100000] [--postgres URL]

Builds decision records shaped like a run's (two attempts, three verdicts, the run's actor and policy),
appends them to a fresh store in chunks of --chunk (as a run does when a chunk completes), then runs
``verify`` over the whole chain, unsigned and signed (Ed25519), on SQLite and, with --postgres, on a
PostgreSQL server (a database of its own is created and dropped). Prints records per second of each
step and the bytes per record of the SQLite file: side by side, in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyflow.audit.chain import generate_key, load_public_key, load_signer  # noqa: E402
from steadyflow.audit.entries import RunContext, decision_entry  # noqa: E402
from steadyflow.audit.records import Attempt, DecisionRecord, Verdict  # noqa: E402
from steadyflow.audit.trail import AuditStore  # noqa: E402

CONTEXT = RunContext(
    "bench-run",
    "support-triage",
    "1.0.0",
    {"name": "bench@host", "via": "login"},
    {
        "hash": "9" * 64,
        "snapshot": "a" * 16,
        "git": {"commit": "b" * 40, "dirty": False},
        "files": {"support_triage.yaml": "c" * 64, "prompts/triage.md": "d" * 64, "rules/triage.yaml": "e" * 64},
    },
)


def record(n: int) -> DecisionRecord:
    """A decision like a run's: a re-ask, then an answer; three checks."""
    attempts = [
        Attempt(0, "model", "small", error_kind="invalid_output", error="category: literal_error", tokens_in=420),
        Attempt(0, "model", "small", tokens_in=480, tokens_out=40, latency_ms=812.5, response_model="small"),
    ]
    verdicts = [
        Verdict("rule", "business", False, "reask", "invoices are billing", 0),
        Verdict("pii", "safety", True, "pass", "", 0),
        Verdict("schema", "structural", True, "pass", "", 0),
    ]
    return DecisionRecord(
        "bench-run",
        f"ticket-{n:07d}.txt",
        "triage",
        "support-triage",
        "1.0.0",
        "f" * 64,
        "0123456789ab",
        "validated",
        0,
        "model:small",
        "small",
        {"model": "small", "temperature": 0, "max_tokens": 200, "mode": "json"},
        attempts=attempts,
        latency_ms=1300.0,
        verdicts=verdicts,
        source_ref="file",
        document_hash="1" * 64,
        output_hash="2" * 64,
        started_at=time.time(),
    )


def measure(url: str, shown: str, count: int, chunk: int, signer: Any, keys: Any) -> dict[str, Any]:
    """Append ``count`` records in chunks to a fresh store at ``url``, then verify it; figures per second."""
    store = AuditStore(url, shown, signer)
    records = [record(n) for n in range(count)]
    started = time.perf_counter()
    for at in range(0, count, chunk):
        store.append([decision_entry(r, store.key(r.doc_id), CONTEXT) for r in records[at : at + chunk]])
    appended = time.perf_counter() - started
    started = time.perf_counter()
    result = store.verify(keys)
    verified = time.perf_counter() - started
    store.close()
    assert result.ok and result.records == count, result
    return {
        "append_records_per_s": round(count / appended, 1),
        "append_ms_per_chunk": round(appended / (count / chunk) * 1000, 2),
        "verify_records_per_s": round(count / verified, 1),
    }


def main() -> None:
    """Measure SQLite (unsigned, signed) and PostgreSQL when given; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=50, help="records per append (a run's chunk_size)")
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a database of its own is made and dropped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"records": args.records, "chunk": args.chunk}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        _key_id, public = generate_key(work / "key.pem")
        signer, keys = load_signer(work / "key.pem"), dict([load_public_key(public)])
        for name, sign in (("sqlite", None), ("sqlite_signed", signer)):
            path = work / f"{name}.sqlite"
            out[name] = measure(f"sqlite:///{path}", name, args.records, args.chunk, sign, keys if sign else None)
            size = sum(p.stat().st_size for p in work.glob(f"{name}.sqlite*"))
            out[name]["bytes_per_record"] = round(size / args.records)
        if args.postgres:
            import sqlalchemy as sa

            database = f"bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
            url = sa.engine.make_url(args.postgres).set(database=database).render_as_string(hide_password=False)
            try:
                out["postgresql"] = measure(url, "postgresql", args.records, args.chunk, None, None)
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
                admin.dispose()
    out["command"] = "python benchmarks/audit.py --json" + (" --postgres URL" if args.postgres else "")
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
