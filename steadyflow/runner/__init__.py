"""The batch runner: one ``Run`` from sources through stages to sinks and the run ledger, without Prefect.

``steadyflow.flows`` compiles this runner into a Prefect flow; tests, ``steadyflow try`` and the
Python API can drive it directly.
"""
