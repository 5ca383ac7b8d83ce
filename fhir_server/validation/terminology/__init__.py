"""Local terminology for the validators: value set membership, code lookups and displays from
the FHIR R4 core, HL7 v2/v3 and the guide's own ValueSets and CodeSystems, without a
terminology server (research/validation.md §A3.5).

    terminology = LocalTerminology(extra=guide_value_sets_and_code_systems)
    terminology.check("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1", system, "male")

Modules: service (LocalTerminology), registry (resources by url|version), code_systems (one
CodeSystem's concepts and hierarchy), filters (compose filters), expansion (compose -> exact
codes plus three-valued rules), logic (Kleene logic), external (systems we do not hold),
syntax / ucum / ucum_atoms / iso_codes (what can be checked of those without their content).
"""

from __future__ import annotations

from .external import ExternalSystem, external_system
from .service import LocalTerminology

__all__ = ["LocalTerminology", "ExternalSystem", "external_system"]
