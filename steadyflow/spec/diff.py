"""What changed between two pipeline versions, in terms that matter: prompts, models, ladders, checks, rules.

Both sides are snapshots (:func:`steadyflow.spec.snapshot.snapshot`): a pipeline file loaded now,
or the version a recorded run kept. Prompts are compared as text (a unified diff headed by both
versions); checks are matched by layer, check and field, so editing one check reads as one change
and reordering them as none; ladder rungs are compared by position.
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
        return [
            f"[system] {prompt.get('system', '')}\n",
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


def _checks(where: str, old: list[Any], new: list[Any]) -> list[Change]:
    before = {_check_key(c): c for c in old}
    after = {_check_key(c): c for c in new}
    found = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            found.append(Change("check", f"{where}[{key}]", b, a))
        else:
            found += _values("check", f"{where}[{key}]", b, a)
    return found


def _ladder(where: str, old: list[Any], new: list[Any]) -> list[Change]:
    found = []
    for index in range(max(len(old), len(new))):
        b = old[index] if index < len(old) else None
        a = new[index] if index < len(new) else None
        place = f"{where}[{index}]"
        if b is None or a is None or not isinstance(b, dict) or not isinstance(a, dict):
            if b != a:
                found.append(Change("ladder", place, b, a))
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
    # a kept snapshot is stored with sorted keys: stages are matched by id, their order is not compared
    if set(old_stages) != set(new_stages):
        found.append(Change("stage", "stages", sorted(old_stages), sorted(new_stages)))
    for stage in sorted(set(old_stages) & set(new_stages)):
        found += _stage(stage, old_stages[stage], new_stages[stage])
    return found
