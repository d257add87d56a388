"""Importing heavy libraries without optional parts steadyflow never uses (only ``sys`` and ``importlib``)."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

# jsonschema checks ``format: iri`` / ``iri-reference`` only when this module imports, and it builds
# about 38 Lark grammars at import time (about 1.2 s on 2 cores).
IRI_FORMAT_MODULE = "rfc3987_syntax"


def import_without_iri_formats(module: str) -> ModuleType:
    """Import ``module`` (and the jsonschema it pulls in) with ``rfc3987_syntax`` reading as not installed.

    jsonschema decides at its own import which format checkers exist; with ``rfc3987_syntax``
    absent it simply does not check the IRI formats, and every other format and every schema
    keyword is checked as before. No steadyflow pipeline, check or Prefect parameter schema uses
    IRI formats. Once jsonschema is imported (here or by anyone earlier) nothing more is changed,
    and the module is not hidden from later imports: only jsonschema's first import is affected.
    """
    if "jsonschema" in sys.modules or IRI_FORMAT_MODULE in sys.modules:
        return importlib.import_module(module)
    sys.modules[IRI_FORMAT_MODULE] = None  # type: ignore[assignment]  # None: "not installed" to the import system
    try:
        return importlib.import_module(module)
    finally:
        if sys.modules.get(IRI_FORMAT_MODULE, 0) is None:
            del sys.modules[IRI_FORMAT_MODULE]
