"""Change control: replay a recorded run through a candidate pipeline, compare field by field, gate CI on it."""
