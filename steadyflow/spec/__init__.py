"""The DSL: pipeline file models, YAML loading with positions, JSON Schema export."""

from steadyflow.spec.errors import Problem, SpecError
from steadyflow.spec.loader import CompiledStage, LoadedPipeline, load_pipeline
from steadyflow.spec.models import Pipeline

__all__ = ["CompiledStage", "LoadedPipeline", "Pipeline", "Problem", "SpecError", "load_pipeline"]
