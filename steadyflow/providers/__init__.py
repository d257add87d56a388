"""Model clients: OpenAI-compatible endpoints via the openai SDK + instructor, prices, errors."""
