"""JSON Schema export of the DSL, for editors and CI checks of pipeline files."""

from __future__ import annotations

from typing import Any

from steadyflow.spec.models import Pipeline

SCHEMA_ID = "https://steadyflow.dev/schema/pipeline-v1.json"


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline file (draft 2020-12)."""
    schema = Pipeline.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
