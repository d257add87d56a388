"""A fault-injecting OpenAI-compatible endpoint, for testing degradation before production."""
