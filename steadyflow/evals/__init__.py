"""Evaluations: run a pipeline over a labelled dataset and measure how often it is right.

:mod:`~steadyflow.evals.dataset` reads datasets, :mod:`~steadyflow.evals.scorers` compares one field
with its label, :mod:`~steadyflow.evals.scoring` aggregates (accuracy, coverage, confusion, the
confidence curve), :mod:`~steadyflow.evals.report` renders, :mod:`~steadyflow.evals.runner` runs.
"""
