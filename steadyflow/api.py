"""The Python API: ``steadyflow.load(path) -> Pipeline`` (being written: issue 13 item 6)."""
