"""The audit store's hash chain catches an attacker's edits, on SQLite and on a real PostgreSQL.

Each tampering is done the way someone with write access to the database would: raw SQL on the
tables, after the store wrote them. ``verify`` must name the first broken record; an untouched store
must verify. A whole-chain rewrite (every hash and the head recomputed) passes the hashes, so only
signatures catch it: that is the limit, and the test shows both sides of it.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from steadyflow.audit.chain import AuditError, generate_key, load_public_key, load_signer, record_hash
from steadyflow.audit.trail import AuditStore, Entry, iso
from tests.conftest import free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty store's URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trail.sqlite'}"
    else:
        yield request.getfixturevalue("fresh_database")


def filled(url: str, count: int = 12, signer: object = None) -> AuditStore:
    """A store with ``count`` records of every kind (decisions of two runs, a run start, a review)."""
    store = AuditStore(url, "test", signer)  # type: ignore[arg-type]
    store.append([Entry("run", {"run_id": "r1"}, run_id="r1", pipeline="p")])
    for n in range(count - 2):
        store.append([Entry("decision", {"n": n, "cost_usd": 0.01}, "r1", store.key(f"d{n}"), "s", "p")])
    store.append([Entry("review", {"reviewer": "bob"}, "r1", store.key("d0"), pipeline="p")])
    return store


def sql(url: str, *statements: str, **params: object) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)
    engine.dispose()


def row(url: str, seq: int) -> dict[str, object]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = dict(conn.execute(sa.text("SELECT * FROM audit_records WHERE seq = :s"), {"s": seq}).mappings().one())
    engine.dispose()
    return found


def rehash(url: str, seq: int, **changes: object) -> None:
    """Edit record ``seq`` and recompute its hash, as an attacker who knows how hashes are made would."""
    edited = {**row(url, seq), **changes}
    sets = ", ".join(f"{name} = :{name}" for name in changes)
    sql(
        url,
        f"UPDATE audit_records SET {sets}, hash = :new_hash WHERE seq = :seq",
        **changes,
        seq=seq,
        new_hash=record_hash(edited),
    )


def broken(store: AuditStore, keys: dict[str, object] | None = None) -> str:
    result = store.verify(keys)
    assert not result.ok, "the tampering was not caught"
    return result.broken or ""


def test_an_untouched_store_verifies(url: str) -> None:
    store = filled(url, 30)
    result = store.verify()
    assert result.ok and result.records == 30 and result.head_seq == 30 and result.first_seq == 1
    assert (result.head_seq, result.head_hash) == store.head()
    store.close()


TAMPERING = {
    "payload edited": (
        ["UPDATE audit_records SET payload = replace(payload, '0.01', '0.00') WHERE seq = 5"],
        "record 5:",
    ),
    "document key edited": (["UPDATE audit_records SET doc_key = 'someone-else' WHERE seq = 6"], "record 6:"),
    "time edited": (["UPDATE audit_records SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 4"], "record 4:"),
    "middle row deleted": (["DELETE FROM audit_records WHERE seq = 7"], "record 7: missing"),
    "first row deleted": (["DELETE FROM audit_records WHERE seq = 1"], "record 1: missing"),
    "last row deleted": (["DELETE FROM audit_records WHERE seq = 12"], "record 12: missing"),
    "rows swapped": (
        [
            "UPDATE audit_records SET seq = -1 WHERE seq = 4",
            "UPDATE audit_records SET seq = 4 WHERE seq = 5",
            "UPDATE audit_records SET seq = 5 WHERE seq = -1",
        ],
        "record 4:",
    ),
    "row appended past the head": (
        [
            "INSERT INTO audit_records (seq, kind, at, payload, prev_hash, hash) "
            "SELECT 13, kind, at, payload, hash, hash FROM audit_records WHERE seq = 12"
        ],
        "record 13:",
    ),
    "head edited": (["UPDATE audit_chain SET head_hash = :forged"], "record 12:"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_each_tampering_is_caught_and_the_first_broken_record_named(url: str, case: str) -> None:
    store = filled(url)
    statements, named = TAMPERING[case]
    sql(url, *statements, forged="f" * 64)
    assert named in broken(store)
    store.close()


def test_an_edit_rehashed_breaks_the_next_link(url: str) -> None:
    store = filled(url)
    rehash(url, 5, payload=json.dumps({"n": 3, "cost_usd": 0.0}))
    assert "record 6: does not follow record 5" in broken(store)
    store.close()


def test_a_row_inserted_in_the_middle_is_caught(url: str) -> None:
    store = filled(url)
    # make room at 6 (renumbering every later row up by one), then insert a forged record that links to 5
    sql(
        url,
        "UPDATE audit_records SET seq = -seq WHERE seq >= 6",
        "UPDATE audit_records SET seq = 1 - seq WHERE seq < 0",
    )
    forged = {"seq": 6, "kind": "decision", "at": row(url, 5)["at"], "run_id": "r1", "doc_key": "x", "stage_id": "s"}
    forged |= {"pipeline": "p", "payload": '{"n":99}', "prev_hash": row(url, 5)["hash"]}
    forged["hash"] = record_hash(forged)
    columns = ", ".join(forged)
    sql(url, f"INSERT INTO audit_records ({columns}) VALUES ({', '.join(':' + c for c in forged)})", **forged)
    assert "record 7: does not follow record 6" in broken(store)
    store.close()


def _rewrite_everything(url: str, seq: int) -> None:
    """Edit record ``seq``, then recompute every later hash and the head: what hashes alone cannot catch."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.text("SELECT * FROM audit_records ORDER BY seq")).mappings()]
        prev = None
        for current in rows:
            if current["seq"] == seq:
                current["payload"] = json.dumps({"n": 0, "cost_usd": 0.0})
            if prev is not None:
                current["prev_hash"] = prev
            current["hash"] = prev = record_hash(current)
            conn.execute(
                sa.text(
                    "UPDATE audit_records SET payload = :payload, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"
                ),
                current,
            )
        conn.execute(sa.text("UPDATE audit_chain SET head_hash = :h"), {"h": prev})
    engine.dispose()


def test_signatures_catch_a_whole_chain_rewrite(url: str, tmp_path: Path) -> None:
    _, public = generate_key(tmp_path / "trail.pem")
    _, other = generate_key(tmp_path / "other.pem")
    keys = dict([load_public_key(public)])
    store = filled(url, signer=load_signer(tmp_path / "trail.pem"))
    assert store.verify(keys).ok and store.verify(keys).signed == 12
    assert "not one of the keys given" in broken(store, dict([load_public_key(other)]))

    _rewrite_everything(url, 4)
    assert store.verify().ok  # the hashes alone hold: the limit of a chain without a key
    assert "record 4: its signature does not verify" in broken(store, keys)
    store.close()


def test_an_unsigned_store_fails_when_keys_are_required(url: str, tmp_path: Path) -> None:
    _, public = generate_key(tmp_path / "trail.pem")
    store = filled(url)
    assert "record 1: not signed" in broken(store, dict([load_public_key(public)]))
    store.close()


def test_a_purge_removes_a_prefix_and_the_chain_still_verifies(url: str) -> None:
    store = filled(url)
    cutoff = str(row(url, 8)["at"])
    result = store.purge(cutoff, "ops")
    assert (result.removed, result.through) == (7, 7)
    verified = store.verify()
    assert verified.ok and verified.first_seq == 8 and verified.purged_through == 7 and verified.records == 6
    purge = json.loads(str(row(url, 13)["payload"]))
    assert purge["purged_through"] == 7 and purge["actor"] == "ops" and purge["removed"] == 7
    assert store.purge(cutoff, "ops").removed == 0  # nothing older is left
    everything = store.purge("9999", "ops")
    assert everything.removed == 6 and store.verify().ok and store.verify().records == 1
    store.close()


@pytest.mark.parametrize(
    "tampering",
    [
        "DELETE FROM audit_records WHERE seq = 8",  # the oldest record kept
        "UPDATE audit_chain SET anchor_seq = 8",  # the anchor claims more was purged
        "UPDATE audit_records SET payload = replace(payload, 'ops', 'eve') WHERE kind = 'purge'",  # who purged
    ],
)
def test_after_a_purge_deleting_more_or_moving_the_anchor_is_caught(url: str, tampering: str) -> None:
    store = filled(url)
    store.purge(str(row(url, 8)["at"]), "ops")
    sql(url, tampering)
    assert broken(store)
    store.close()


def test_a_purge_refuses_a_chain_with_a_hole_at_its_cut(url: str) -> None:
    store = filled(url)
    cutoff = str(row(url, 8)["at"])
    sql(url, "DELETE FROM audit_records WHERE seq = 7")
    with pytest.raises(AuditError, match="record 7 is missing"):
        store.purge(cutoff, "ops")
    store.close()


def _age(url: str, days: float) -> None:
    """Test set-up: make every record ``days`` old, rehashing the chain (verify still holds: it is our own store)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.text("SELECT * FROM audit_records ORDER BY seq")).mappings()]
        prev = rows[0]["prev_hash"] if rows else None
        import time

        for current in rows:
            current["at"] = iso(time.time() - days * 86400)
            current["prev_hash"] = prev
            current["hash"] = prev = record_hash(current)
            conn.execute(
                sa.text("UPDATE audit_records SET at = :at, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"),
                current,
            )
        conn.execute(sa.text("UPDATE audit_chain SET head_hash = :h"), {"h": prev})
    engine.dispose()


def test_retention_keeps_records_as_long_as_the_longest_retention_asks(url: str) -> None:
    store = filled(url)  # records 1-12
    store.set_retention("p", 1, "ops")  # 13
    store.set_retention("p", 1, "ops")  # unchanged: no record
    store.append([Entry("run", {}, "r2", pipeline="q")])  # 14; q declares no retention: kept forever
    _age(url, 2)
    assert store.purge_expired("ops") is None
    store.set_retention("q", 30, "ops")  # 15
    kept = store.purge_expired("ops")
    assert kept is not None and kept.removed == 0  # 30 days for q: nothing two days old goes
    store.set_retention("q", 1, "ops")  # 16
    gone = store.purge_expired("ops")
    assert gone is not None and gone.removed == 14  # the aged prefix; 15, 16 and the purge's own record stay
    assert store.verify().ok and [r["kind"] for r in store.rows()] == ["retention", "retention", "purge"]
    store.close()


def _append_many(url: str, worker: int, count: int) -> None:
    store = AuditStore(url, "test")
    for n in range(count):
        store.append([Entry("decision", {"w": worker, "n": n, "k": i}, f"w{worker}") for i in range(1 + n % 3)])
    store.close()


def test_two_processes_append_to_one_chain_at_once(url: str) -> None:
    AuditStore(url, "test").close()  # created once, as a first run does
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_append_many, args=(url, w, 120)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    store = AuditStore(url, "test")
    result = store.verify()
    total = 2 * sum(1 + n % 3 for n in range(120))
    assert result.ok and result.records == total and result.head_seq == total
    store.close()


def test_a_store_that_is_not_there_or_not_reachable_is_one_line(fresh_database: str) -> None:
    with pytest.raises(AuditError, match="not a steadyflow audit store"):
        AuditStore(fresh_database, "fresh", create=False)
    dead = f"postgresql+psycopg://audit:pw-Secret-9@127.0.0.1:{free_port()}/audit"
    with pytest.raises(AuditError) as caught:
        AuditStore(dead, "postgresql+psycopg://audit:***@127.0.0.1/audit")
    message = str(caught.value)
    assert "cannot open" in message and "pw-Secret-9" not in message and "\n" not in message
