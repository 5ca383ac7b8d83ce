"""Facts about FHIR types that the merge rules need: choice-type renaming, the type of a fixed or
pattern value, which types derive from which, and which types can carry a binding.
"""

from __future__ import annotations

__all__ = [
    "FHIR_TYPE_EXTENSION",
    "PRIMITIVE_TYPES",
    "BINDABLE_TYPES",
    "CORE_SD",
    "type_code",
    "type_codes",
    "renamed_choice_type",
    "value_type",
    "derives_from",
    "datatype_url",
]

CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

# R4 datatypes.html "Primitive Types"
PRIMITIVE_TYPES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
    "xhtml",
})

# ElementDefinition eld-11: a binding needs one of these types (R4 profiles-types.json)
BINDABLE_TYPES = frozenset({"code", "Coding", "CodeableConcept", "Quantity", "string", "uri"})

# Types a profile may replace by a more specific one (R4 profiling.html "Limiting Types")
_ABSTRACT_BASES = frozenset({"Element", "BackboneElement", "*"})
_RESOURCE_BASES = frozenset({"Resource", "DomainResource"})


def type_code(type_ref: dict) -> str:
    """A type's code, reading FHIRPath system types (`http://hl7.org/fhirpath/System.String` on
    `.id`, `Extension.url`, primitive `.value`) through their structuredefinition-fhir-type
    extension, which names the FHIR type."""
    code = type_ref.get("code", "")
    if code.startswith("http://hl7.org/fhirpath/System."):
        for extension in type_ref.get("extension", ()):
            if extension.get("url") == FHIR_TYPE_EXTENSION:
                return extension.get("valueUrl") or extension.get("valueUri") or code
    return code


def type_codes(element: dict) -> list[str]:
    return [type_code(t) for t in element.get("type", ())]


def _title(code: str) -> str:
    return code[:1].upper() + code[1:]


def renamed_choice_type(name: str, choice_name: str, codes: list[str]) -> str | None:
    """For a choice element `value[x]` with types `codes`, the type named by `valueQuantity`
    (elementdefinition.html "Constraining elements with a choice of Type"), or None."""
    stem = choice_name[:-3]
    if not choice_name.endswith("[x]") or not name.startswith(stem) or name == choice_name:
        return None
    suffix = name[len(stem):]
    for code in codes:
        if _title(code) == suffix:
            return code
    return None


def value_type(key: str) -> str:
    """The type of a `fixed[x]`/`pattern[x]`/`minValue[x]` value from its JSON key:
    fixedUri -> uri, fixedDateTime -> dateTime, patternCodeableConcept -> CodeableConcept."""
    for prefix in ("fixed", "pattern", "minValue", "maxValue", "defaultValue"):
        if key.startswith(prefix):
            suffix = key[len(prefix):]
            lowered = suffix[:1].lower() + suffix[1:]
            return lowered if lowered in PRIMITIVE_TYPES else suffix
    raise ValueError(key)


def derives_from(code: str, base_types: list[dict]) -> bool:
    """Whether a profile may use type `code` where the base allows `base_types` (the R4 Java
    check `checkTypeDerivation`: same type, or an abstract base that any type specialises)."""
    for base_type in base_types:
        base_code = type_code(base_type)
        if code == base_code or code == base_type.get("code"):
            return True
        if base_code in _ABSTRACT_BASES:
            return True
        if base_code in _RESOURCE_BASES and code[:1].isupper():
            return True
    return False


def datatype_url(code: str) -> str:
    return code if "://" in code else CORE_SD + code
