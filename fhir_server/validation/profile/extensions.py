"""Extensions met by the base pass (validation.md §A3.8, R4 extensibility.html).

For every `extension` / `modifierExtension` repetition:

- ext-1 (VAL-50): a value or sub-extensions, not both, not neither;
- the definition is looked up by `url` (absolute urls only: a relative url names a sub-extension
  of a complex extension, checked by the parent's definition);
- unknown: `extension` -> information `extension-unknown` (extensions are designed to be safely
  ignorable; HAPI's default); `modifierExtension` -> error `modifier-extension-unknown` (a
  modifier changes the meaning of its element; we must not store what we do not understand)
  (VAL-51);
- known: a modifier extension in `extension`, or a plain one in `modifierExtension`, is an error
  (VAL-52); the host must be one of the definition's contexts (VAL-53); the content must conform
  to the definition (value type, sub-extension slices, cardinality; VAL-54, VAL-55).

The content of the extension (its value's datatype rules, nested extensions) is walked by the base
pass as for any Extension element.

Contexts of type `element` match the host element's path (`Patient.contact`, or within a datatype
`HumanName.family`), its type (`HumanName`, and `Quantity` for Quantity's specialisations), or
`Element` / `Resource` / `DomainResource`. `fhirpath` and `extension` contexts are accepted
without evaluation (none of the core extensions uses them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from fhir_server.validation.profile.model import Scope

if TYPE_CHECKING:
    from fhir_server.validation.profile.walk import Walk

__all__ = ["Host", "check_extension"]

_QUANTITY_KINDS = frozenset({"Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity"})


class Host(NamedTuple):
    """The element an extension sits on: its path from the resource root without indexes
    (`Patient.name.given`), its path in the definition that describes it (`HumanName.given`),
    its type, and whether it is a resource."""

    path: str
    definition_path: str
    type_code: str
    is_resource: bool = False


def _context_names(host: Host) -> set[str]:
    names = {"Element", host.path, host.definition_path, host.type_code}
    names |= {name.replace("[x]", "") for name in tuple(names)}
    if host.is_resource:
        names |= {"Resource", "DomainResource"}
    if host.type_code in _QUANTITY_KINDS:
        names.add("Quantity")
    if host.type_code == "BackboneElement":
        names.add("BackboneElement")
    return names


def _has_value(extension: dict) -> bool:
    return any(key[:5] == "value" or key[:6] == "_value" for key in extension)


def check_extension(walk: Walk, extension: Any, expression: str, slot: str, host: Host, scope: Scope) -> None:
    if not isinstance(extension, dict):
        return
    if bool(extension.get("extension")) == _has_value(extension):
        walk.report(
            "error",
            "invariant",
            expression,
            "Constraint failed: ext-1: 'Must have either extensions or value[x], not both' "
            "(defined in http://hl7.org/fhir/StructureDefinition/Extension)",
            "ext-1",
        )
    url = extension.get("url")
    if not isinstance(url, str) or ":" not in url:
        return
    structure = walk.registry.structure(url)
    if structure is None or structure.type != "Extension" or structure.root is None:
        if slot == "modifierExtension":
            walk.report(
                "error",
                "extension",
                expression,
                f"The modifier extension {url} is not known, so the element it modifies cannot be understood",
                "modifier-extension-unknown",
            )
        else:
            walk.report(
                "information",
                "extension",
                expression,
                f"Unknown extension {url}: its content was not checked",
                "extension-unknown",
            )
        return
    if structure.modifier_extension and slot == "extension":
        walk.report(
            "error",
            "extension",
            expression,
            f"The extension {url} must not be used as an extension (it is a modifierExtension)",
            "extension-context",
        )
    elif not structure.modifier_extension and slot == "modifierExtension":
        walk.report(
            "error",
            "extension",
            expression,
            f"The extension {url} must not be used as a modifierExtension (it is not a modifier)",
            "extension-context",
        )
    element_contexts = [expr for kind, expr in structure.contexts if kind == "element"]
    if element_contexts and len(element_contexts) == len(structure.contexts):
        names = _context_names(host)
        if not any(context in names for context in element_contexts):
            walk.report(
                "error",
                "extension",
                expression,
                f"The extension {url} is not allowed to be used at this point (this element is {host.path}; "
                f"allowed = {', '.join(element_contexts)})",
                "extension-context",
            )
    walk.validate_against(extension, structure, expression, scope, host.path + ".extension", "Extension")
