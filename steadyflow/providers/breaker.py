"""Circuit breakers: one per model endpoint, shared by every document of a run.

closed -> open when the endpoint fails ``consecutive_failures`` times in a row, or when
at least ``min_calls`` of the last ``window`` calls include ``failure_rate`` failures.
open -> half-open after ``cooldown_s``; half-open lets ``half_open_probes`` calls through:
a success closes the breaker, a failure opens it again. A 429 with Retry-After holds the
endpoint for that long whatever the state: calls wait it out (or skip the endpoint when
it outlasts their timeout), so concurrent documents stop hammering it.

What counts is explicit (:data:`OPENS`): rate limits, 5xx, timeouts, resets and empty
answers are the endpoint's trouble. Client errors (400/401/404: the caller's fault) and
invalid output (a healthy endpoint that answered badly) never open a breaker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from steadyflow.core.vocabulary import ErrorKind
from steadyflow.providers.errors import TRANSIENT
from steadyflow.spec.models import BreakerSpec

OPENS = TRANSIENT
"""Error kinds that count as failures of the endpoint."""
NEUTRAL = frozenset({ErrorKind.INVALID_OUTPUT, ErrorKind.TRUNCATED, ErrorKind.CLIENT_ERROR, ErrorKind.UNKNOWN})
"""Error kinds that say nothing about the endpoint's health."""


@dataclass
class CircuitBreaker:
    """The state of one endpoint; not thread-safe by design: a run's documents share one event loop."""

    spec: BreakerSpec
    clock: Callable[[], float] = time.monotonic
    state: str = "closed"
    opened_at: float = 0.0
    held_until: float = 0.0
    consecutive: int = 0
    probes: int = 0
    window: deque[bool] = field(default_factory=deque)
    opened: int = 0
    """How many times the breaker opened in this run (for the run summary)."""

    def hold_s(self) -> float:
        """How long a Retry-After still holds the endpoint (0 when it does not)."""
        return max(0.0, self.held_until - self.clock()) if self.spec.enabled else 0.0

    def allow(self) -> bool:
        """Whether a call may go to the endpoint now (a half-open breaker admits its probes)."""
        if not self.spec.enabled:
            return True
        now = self.clock()
        if self.state == "open" and now - self.opened_at >= self.spec.cooldown_s:
            self.state, self.probes = "half_open", 0
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.probes < self.spec.half_open_probes:
            self.probes += 1
            return True
        return False

    def record(self, kind: ErrorKind | None, retry_after: float | None = None) -> None:
        """Record the outcome of one HTTP call: None for success, else its error kind."""
        if not self.spec.enabled:
            return
        if kind is not None and kind not in OPENS:
            if self.state == "half_open":
                self.probes = max(0, self.probes - 1)  # the probe told us nothing; let another one try
            return
        failed = kind is not None
        if failed and kind == ErrorKind.RATE_LIMITED and retry_after:
            self.held_until = max(self.held_until, self.clock() + retry_after)
        if self.state == "half_open":
            self._close() if not failed else self._open()
            return
        self.window.append(failed)
        while len(self.window) > self.spec.window:
            self.window.popleft()
        self.consecutive = self.consecutive + 1 if failed else 0
        rate_tripped = (
            len(self.window) >= self.spec.min_calls and sum(self.window) / len(self.window) >= self.spec.failure_rate
        )
        if self.state == "closed" and failed and (self.consecutive >= self.spec.consecutive_failures or rate_tripped):
            self._open()

    def _open(self) -> None:
        self.state, self.opened_at, self.probes = "open", self.clock(), 0
        self.opened += 1

    def _close(self) -> None:
        self.state, self.consecutive, self.probes = "closed", 0, 0
        self.window.clear()
