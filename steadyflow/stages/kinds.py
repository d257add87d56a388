"""Stage kinds from plugins: ``@stage("name")`` functions, known by name like checks and estimators.

A pipeline names a plugin kind as a stage's ``kind``; the stage is then a ladder of [the function,
the stage's ``default`` if given], every output through the stage's ``validate:`` checks, exactly
as a ``rules`` stage. In Python::

    from steadyflow.stages.kinds import stage

    @stage("lookup")
    def lookup(params: dict, text: str, context) -> dict:
        return {"country": params["table"].get(text.strip(), "unknown")}

and in the pipeline (whose ``plugins:`` imports the module above)::

    - id: country
      kind: lookup
      with: {table: {FR: France}}
      output: {country: {type: string}}
      validate: [{layer: business, check: rule, rule: "output.country != 'unknown'", on_fail: escalate}]
      default: {country: unknown}

Installed packages register kinds through the ``steadyflow.stages`` entry-point group. The
function may be async; what it raises, or returns that does not fit the output, is a recorded
attempt, never an exception out of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from steadyflow.core.registry import Registry
from steadyflow.core.vocabulary import RungKind
from steadyflow.spec.models import BUILTIN_STAGE_KINDS

if TYPE_CHECKING:  # a type only: rungs imports the model clients (openai, instructor), 1.3 s that validate never needs
    from steadyflow.stages.rungs import StageFunction

STAGE_KINDS: Registry[StageFunction] = Registry("stage kind", "steadyflow.stages")
"""Plugin stage kinds by name (``ai`` and ``rules`` are built into the spec, not registered here)."""

_RESERVED = frozenset({*BUILTIN_STAGE_KINDS, *(kind.value for kind in RungKind)})
"""Names a plugin kind cannot take: the built-in stage kinds, and the rung kinds its records would be confused with."""


def stage(name: str) -> Callable[[StageFunction], StageFunction]:
    """Register ``function(params, text, context) -> dict | BaseModel`` as the stage kind ``name``.

    ``params`` is the stage's ``with:`` mapping (a copy), ``text`` the document's stage input,
    ``context`` a :class:`steadyflow.validators.base.Context` (document id, fields, run).
    """
    if name in _RESERVED:
        raise ValueError(f"'{name}' is a built-in stage or rung kind; give the plugin another name")
    return STAGE_KINDS.register(name)
