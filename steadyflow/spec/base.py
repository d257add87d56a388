"""The base of every DSL model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every DSL model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
