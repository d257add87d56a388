"""steadyflow: declarative AI pipelines that keep working when the model does not."""

__version__ = "0.1.0"
