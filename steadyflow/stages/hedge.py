"""Hedged calls: when a model rung has not answered in time, ask the ladder's next model too.

A rung with ``hedge:`` calls its model; if no answer came within ``after_ms`` (or the latency quantile
the run observed for that model and the document's class) and the rung's share of hedged calls allows,
the next model rung is called as well. The first valid answer wins; the other call is cancelled, and since
its input was sent it is paid: it is recorded as an attempt of its own (``hedge_lost``, input tokens
estimated from the prompt's length) and charged to the budget. A winning hedge is recorded as the rung
that answered (its label and model), with ``hedge: true`` on its attempts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import BaseModel

from steadyflow.audit.records import Attempt
from steadyflow.core.vocabulary import ErrorKind, RungKind
from steadyflow.validators.runner import CheckRun

if TYPE_CHECKING:  # rungs.py calls in here; its classes are only types to this module
    from steadyflow.stages.rungs import ModelStep, Sandwich, Trail


async def hedged(
    step: ModelStep,
    sandwich: Sandwich,
    response_model: type[BaseModel],
    messages: list[dict[str, str]],
    run: CheckRun,
    trail: Trail,
) -> BaseModel | None:
    """Call this rung's model; if it has not answered in time (and the share allows), the next model too.

    The first valid answer wins and the other call is cancelled; its input is paid, so it is recorded
    as an attempt of its own (``hedge_lost``, input tokens estimated) and charged to the budget.
    """
    budget = sandwich.hedges.get(step.index)
    if budget is not None:
        budget.calls += 1
    from steadyflow.stages.rungs import Trail  # at call time: rungs.py imports this module

    mine = Trail()
    first = asyncio.ensure_future(step._call(sandwich, response_model, messages, run, mine))
    delay = step._hedge_delay_s(sandwich)
    other = step.next_model
    if delay is not None and other is not None:
        done, _ = await asyncio.wait({first}, timeout=delay)
        theirs = Trail()
        if not done and (budget is None or budget.allow()):
            fitted = await other._fit(sandwich, response_model, theirs)
            if fitted is not None:
                race = await _race(step, sandwich, response_model, first, mine, other, fitted, theirs, trail)
                if sandwich.answered is not None:  # the hedge won: it went out after this wait
                    theirs.attempts[0].waited_ms, theirs.attempts[0].wait_reason = round(delay * 1000, 2), "hedge"
                return race
    output = await first
    trail.attempts += mine.attempts
    return output


async def _race(
    step: ModelStep,
    sandwich: Sandwich,
    response_model: type[BaseModel],
    first: asyncio.Future[BaseModel | None],
    mine: Trail,
    other: ModelStep,
    messages: list[dict[str, str]],
    theirs: Trail,
    trail: Trail,
) -> BaseModel | None:
    other_run = CheckRun(sandwich.context, other.index)
    second = asyncio.ensure_future(other._call(sandwich, response_model, messages, other_run, theirs))
    pending: set[asyncio.Future[BaseModel | None]] = {first, second}
    winner: asyncio.Future[BaseModel | None] | None = None
    while pending and winner is None:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        winner = next((task for task in (first, second) if task in done and task.result() is not None), None)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task, caller, made in ((first, step, mine), (second, other, theirs)):
        if task in pending:
            made.attempts.append(_lost(caller, sandwich, messages))
    for attempt in theirs.attempts:
        attempt.hedge = True
    trail.attempts += mine.attempts + theirs.attempts
    trail.verdicts += other_run.verdicts
    if winner is second:
        sandwich.answered = (other.index, other.label, other.model)
    return winner.result() if winner is not None else None


def _lost(step: ModelStep, sandwich: Sandwich, messages: list[dict[str, str]]) -> Attempt:
    """The cancelled call of a hedged pair: its input was sent, so it is paid (estimated from its length)."""
    price = sandwich.clients[step.spec.model].spec.price
    tokens = sum(len(m.get("content") or "") for m in messages) // 4
    attempt = Attempt(
        rung=step.index,
        kind=RungKind.MODEL.value,
        model=step.spec.model,
        error_kind=ErrorKind.HEDGE_LOST.value,
        error="cancelled: the other call of the hedge answered first",
        tokens_in=tokens,
        cost_usd=tokens * price.input_per_mtok / 1_000_000,
    )
    if sandwich.budget is not None:
        sandwich.budget.charge([attempt])
    return attempt
