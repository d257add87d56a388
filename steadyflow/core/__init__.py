"""The bottom layer: the vocabulary every other layer shares (documents, statuses, rung and error kinds, registries).

Nothing here imports another part of steadyflow, nor any library beyond the standard one.
"""
