"""The Prefect edge: compile pipelines into flows and run them.

Importing this package imports jsonschema (which Prefect imports first thing) without its IRI
format checks: ``rfc3987_syntax`` builds about 38 Lark grammars at import (1.2 s of a ``run``'s
start-up). Prefect still validates deployment parameter schemas with jsonschema; only the
``format: iri``/``iri-reference`` checks are skipped, which no steadyflow parameter uses. The
``prefect server start`` process is a separate interpreter and is not affected. Prefect itself is
not imported here: ``flows.settings`` must set its environment before that happens.
"""

from steadyflow.core.imports import import_without_iri_formats

import_without_iri_formats("jsonschema")
