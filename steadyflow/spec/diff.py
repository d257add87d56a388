"""What changed between two pipeline versions, in terms that matter: prompts, models, ladders, checks, rules.

Both sides are snapshots (:func:`steadyflow.spec.snapshot.snapshot`): a pipeline file loaded now,
or the version a recorded run kept. Prompts are compared as text (a unified diff headed by both
versions); checks are matched by layer, check and field, so editing one check reads as one change
and reordering them as none; ladder rungs are compared by position, aligned so that a rung
inserted or removed reads as that rung alone.

A recorded snapshot was stored with its keys sorted, so the order of stages is not compared (nor is
it part of a snapshot's hash): stages are matched by id and listed in the order of their ids.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    """One difference: its section, where it is, and the old and new values (None: absent)."""

    section: str
    """'pipeline', 'model', 'stage', 'prompt', 'ladder', 'rules', 'check', 'output', 'input' or 'other'."""
    where: str
    old: Any = None
    new: Any = None
    unified: str = ""
    """For prompts: the unified diff of system and template text."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``--json``)."""
        return {"section": self.section, "where": self.where, "old": self.old, "new": self.new, "unified": self.unified}


def _values(section: str, where: str, old: Any, new: Any) -> list[Change]:
    """Changes between two JSON values, down to the leaves of dicts (lists compared whole)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _values(section, f"{where}.{key}", old.get(key), new.get(key))
        return found
    return [Change(section, where, old, new)]


def _prompt(where: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Change]:
    if (old or {}).get("version") == (new or {}).get("version"):
        return []

    def lines(prompt: dict[str, Any] | None) -> list[str]:
        if prompt is None:
            return []
        system = str(prompt.get("system") or "").splitlines() or [""]
        return [
            *(f"[system] {line}\n" for line in system),  # a system prompt of several lines, line by line
            *(f"{line}\n" for line in str(prompt.get("template", "")).splitlines()),
        ]

    unified = "".join(
        difflib.unified_diff(
            lines(old),
            lines(new),
            f"prompt {(old or {}).get('version', '(none)')}",
            f"prompt {(new or {}).get('version', '(none)')}",
        )
    )
    return [Change("prompt", where, (old or {}).get("version"), (new or {}).get("version"), unified)]


def _check_key(check: Any) -> str:
    if not isinstance(check, dict):
        return json.dumps(check, sort_keys=True)
    fields = check.get("field") or check.get("fields") or check.get("rule") or ""
    return f"{check.get('layer')}:{check.get('check') or check.get('plugin')}:{json.dumps(fields, sort_keys=True)}"


def _check_kind(check: Any) -> str:
    """Layer and check alone: an edited rule's text keeps its kind (its key changes)."""
    return _check_key(check).rsplit(":", 1)[0] if isinstance(check, dict) else _check_key(check)


def _pair_checks(old: list[Any], new: list[Any]) -> list[tuple[int | None, int | None]]:
    """(old index, new index) of the same check on both sides; None on one side: added or removed.

    Equal checks pair first (a reordering is no change), then checks with the same key, then the rest
    of one kind in order (an edited rule); several checks may share a key (two format checks of one
    field), so each is paired once, never collapsed into one.
    """
    pairs: list[tuple[int | None, int | None]] = []
    free_old, free_new = list(range(len(old))), list(range(len(new)))
    for same in (
        lambda a, b: a == b,
        lambda a, b: _check_key(a) == _check_key(b),
        lambda a, b: _check_kind(a) == _check_kind(b),
    ):
        for j in list(free_new):
            i = next((i for i in free_old if same(old[i], new[j])), None)
            if i is not None:
                pairs.append((i, j))
                free_old.remove(i)
                free_new.remove(j)
    return pairs + [(i, None) for i in free_old] + [(None, j) for j in free_new]


def _nth_key(checks: list[Any], index: int) -> str:
    """The check's key; ``key#n`` for the n-th of several checks sharing one (two format checks of a field)."""
    keys = [_check_key(check) for check in checks]
    key = keys[index]
    return key if keys.count(key) == 1 else f"{key}#{keys[:index].count(key) + 1}"


def _checks(where: str, old: list[Any], new: list[Any]) -> list[Change]:
    """Checks added, removed or edited (per value), in the order of their keys."""
    found: list[tuple[str, list[Change]]] = []
    for i, j in _pair_checks(old, new):
        b, a = (None if i is None else old[i]), (None if j is None else new[j])
        key = _nth_key(new, j) if j is not None else _nth_key(old, i or 0)
        if b is None or a is None:
            found.append((key, [Change("check", f"{where}[{key}]", b, a)]))
        else:
            found.append((key, _values("check", f"{where}[{key}]", b, a)))
    return [change for _, changes in sorted(found, key=lambda item: item[0]) for change in changes]


def _rung_kind(rung: dict[str, Any]) -> str:
    return next((kind for kind in ("model", "rules", "default") if kind in rung), "")


def _positional(i1: int, i2: int, j1: int, j2: int) -> list[tuple[int | None, int | None]]:
    """``old[i1:i2]`` against ``new[j1:j2]`` position by position, then what only one side has."""
    both = min(i2 - i1, j2 - j1)
    pairs: list[tuple[int | None, int | None]] = [(i1 + k, j1 + k) for k in range(both)]
    return pairs + [(i, None) for i in range(i1 + both, i2)] + [(None, j) for j in range(j1 + both, j2)]


def _aligned(old: list[Any], new: list[Any]) -> list[tuple[int | None, int | None]]:
    """(old index, new index) of rungs that differ, aligned so that a rung inserted or removed is only that.

    Equal rungs align first; among the rest, rungs of the same kind pair up (an edited rules rung next
    to an inserted model rung reads as those two changes, not as one rung turned into another).
    """
    canon = [[json.dumps(rung, sort_keys=True) for rung in side] for side in (old, new)]
    kinds = [[_rung_kind(rung) if isinstance(rung, dict) else "" for rung in side] for side in (old, new)]
    pairs: list[tuple[int | None, int | None]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, canon[0], canon[1], autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        within = difflib.SequenceMatcher(None, kinds[0][i1:i2], kinds[1][j1:j2], autojunk=False)
        for _, a1, a2, b1, b2 in within.get_opcodes():
            pairs += _positional(i1 + a1, i1 + a2, j1 + b1, j1 + b2)
    return pairs


def _ladder(where: str, old: list[Any], new: list[Any]) -> list[Change]:
    """Rungs added, removed or changed (per value; a rules rung's content field by field)."""
    found = []
    for i, j in _aligned(old, new):
        b = old[i] if i is not None else None
        a = new[j] if j is not None else None
        place = f"{where}[{j if j is not None else i}]"
        if not isinstance(b, dict) or not isinstance(a, dict) or _rung_kind(b) != _rung_kind(a):
            found.append(Change("ladder", place, b, a))  # added, removed, or another kind of rung: one change
            continue
        found += _values("rules", f"{place}.rules", b.get("rules"), a.get("rules"))
        rest_b = {k: v for k, v in b.items() if k != "rules"}
        rest_a = {k: v for k, v in a.items() if k != "rules"}
        found += _values("ladder", place, rest_b, rest_a)
    return found


_SECTIONS = {"input": "input", "output": "output", "rules": "rules"}


def _stage(stage: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    where = f"stages.{stage}"
    found = _prompt(f"{where}.prompt", old.get("prompt"), new.get("prompt"))
    found += _ladder(f"{where}.ladder", old.get("ladder") or [], new.get("ladder") or [])
    found += _checks(f"{where}.validate", old.get("validate") or [], new.get("validate") or [])
    for key in sorted(set(old) | set(new)):
        if key in ("prompt", "ladder", "validate"):
            continue
        found += _values(_SECTIONS.get(key, "other"), f"{where}.{key}", old.get(key), new.get(key))
    return found


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every change from snapshot ``old`` to snapshot ``new``, in a stable order; empty when they decide alike."""
    found = _values("pipeline", "pipeline", old.get("pipeline"), new.get("pipeline"))
    found += _values("pipeline", "version", old.get("version"), new.get("version"))
    old_models, new_models = old.get("models", {}), new.get("models", {})
    for name in sorted(set(old_models) | set(new_models)):
        b, a = old_models.get(name), new_models.get(name)
        if b is None or a is None:
            found.append(Change("model", f"models.{name}", b, a))
        else:
            found += _values("model", f"models.{name}", b, a)
    old_stages, new_stages = old.get("stages", {}), new.get("stages", {})
    for stage in sorted(set(old_stages) | set(new_stages)):  # by id: a recorded snapshot kept no order
        b, a = old_stages.get(stage), new_stages.get(stage)
        if b is None or a is None:
            found.append(Change("stage", f"stages.{stage}", b, a))
        else:
            found += _stage(stage, b, a)
    return found
