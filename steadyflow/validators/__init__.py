"""Validator layers: structural, semantic, business and safety checks on every output.

Importing this package sets the offline defaults of the libraries the safety
layer uses, before any of them is imported: tldextract (presidio's e-mail
recognizer) uses its bundled public-suffix snapshot instead of fetching the
list, and litellm (a guardrails-ai dependency) uses its bundled model-cost map.
guardrails-ai's own telemetry is turned off where its Guards are made
(:mod:`steadyflow.validators.guards`), and its Guards run their validators in order in the
calling thread (``GUARDRAILS_RUN_SYNC``): steadyflow's validators are plain functions, and
guardrails' default service started an asyncio event loop for each string it checked (a third of
a Guard's time).
"""

import os

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GUARDRAILS_RUN_SYNC", "true")
