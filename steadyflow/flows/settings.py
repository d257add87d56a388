"""Prefect settings steadyflow applies before Prefect is imported (so not in compiler.py)."""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    # Nothing phones home: Prefect's server analytics off, and the common opt-out for the rest.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Our own loggers show up in the Prefect UI next to Prefect's.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "steadyflow",
    # The ephemeral API migrates its database on first use; 20 s is not enough on 2 cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prefect_defaults() -> None:
    """Set offline defaults before Prefect is imported; a user's own setting wins."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
