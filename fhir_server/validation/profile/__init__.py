"""Validation of FHIR R4 resources against StructureDefinition snapshots (validation.md Part A §A3).

Modules, one job each:

- model.py: the compiled element tree (nodes, types, bindings, slicing) and the walk's scope/item;
- compile.py: snapshot -> element tree, once per StructureDefinition (PERF-01);
- registry.py: compiled trees cached by canonical;
- walk.py: the instance walk (cardinality, types, content, nested resources);
- values.py: fixed[x] / pattern[x];
- bindings.py: terminology bindings;
- references.py: reference target types and target profiles;
- slicing.py: discriminators, slice assignment and slicing rules;
- extensions.py: extensions against their definitions, unknown extensions, contexts;
- invariants.py: FHIRPath invariants (fhirpathpy with fixups and user functions);
- native.py / xhtml.py: the universal invariants in Python (PERF-02);
- coverage.py: which invariants cannot be evaluated (VAL-63);
- validator.py: `ProfileValidator`, the public entry points.
"""

from fhir_server.validation.profile.coverage import unevaluable_invariants
from fhir_server.validation.profile.validator import BEST_PRACTICE_LEVELS, ProfileValidator

__all__ = ["ProfileValidator", "BEST_PRACTICE_LEVELS", "unevaluable_invariants"]
