"""The compiled form of a StructureDefinition snapshot: a tree of `ElementNode`s.

One tree per StructureDefinition (url|version), built once by compile.py (validation.md PERF-01)
and shared by every validation: children are indexed by element name and by the JSON keys that
can carry them (`valueQuantity`, `_given`), slices hang off their slicing entry, and everything a
check needs (cardinality, types, fixed/pattern, binding, invariants) is read from attributes, with
no string parsing at validation time.

Two kinds of tree, chosen by the definition's `derivation`:

- a *base* tree (a resource or datatype definition, derivation `specialization`) checks
  everything and descends into the definitions of the datatypes it meets;
- a *profile* tree (derivation `constraint`) checks only what the profile adds to the base
  definition — cardinality, bindings, target types and invariants that differ from the base
  element's (looked up by `ElementDefinition.base.path`) — and walks only into what its
  snapshot expands or a `type.profile` names, so that the write path, which runs the base pass and
  then each profile, reports every finding once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.validation.profile.invariants import Invariant

__all__ = [
    "PRIMITIVE_TYPES",
    "BINDABLE_TYPES",
    "STRING_BINDABLE_TYPES",
    "binding_applies",
    "TypeRef",
    "Binding",
    "Discriminator",
    "Slicing",
    "ElementNode",
    "CompiledStructure",
    "Scope",
    "Item",
]

# R4 primitive datatypes (datatypes.html#primitive): JSON values rather than objects.
PRIMITIVE_TYPES = frozenset(
    {
        "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant",
        "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt",
        "uuid", "xhtml",
    }
)
# Types a terminology binding applies to when checking an instance (terminologies.html#binding,
# eld-11). A string or uri is checked like a code (its value must be a code of the value set), but
# only where the element is a string-like one: on a choice such as Observation.component.value[x]
# the binding is meant for the coded types (the units of a Quantity), not for a valueString.
BINDABLE_TYPES = frozenset({"code", "Coding", "CodeableConcept", "Quantity"})
STRING_BINDABLE_TYPES = frozenset({"code", "string", "uri"})


def binding_applies(type_code: str, element_types: frozenset[str]) -> bool:
    if type_code in BINDABLE_TYPES:
        return True
    return type_code in STRING_BINDABLE_TYPES and element_types <= STRING_BINDABLE_TYPES


@dataclass(frozen=True, slots=True)
class TypeRef:
    """One `ElementDefinition.type`: the type code and the profiles an instance must meet."""

    code: str
    profiles: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Binding:
    strength: str  # required | extensible | preferred | example
    value_set: str | None


@dataclass(slots=True, eq=False)
class Discriminator:
    """`ElementDefinition.slicing.discriminator`, with its path split into steps by slicing.py."""

    kind: str  # value | pattern | type | profile | exists
    path: str


@dataclass(slots=True, eq=False)
class Slicing:
    discriminators: tuple[Discriminator, ...]
    rules: str  # closed | open | openAtEnd
    ordered: bool
    slices: list[ElementNode] = field(default_factory=list)
    # filled on first use by slicing.py: per slice, the tests its repetitions must pass
    matchers: list[Any] | None = None
    # fast path for the common "sliced by url" case (extensions): url -> slice
    by_url: dict[str, ElementNode] | None = None


@dataclass(slots=True, eq=False)
class ElementNode:
    id: str
    path: str  # ElementDefinition.path, e.g. "Observation.component.value[x]"
    name: str  # last path segment, e.g. "value[x]"
    structure: CompiledStructure
    min: int = 0
    max: int | None = None  # None = "*"
    slice_name: str | None = None
    types: tuple[TypeRef, ...] = ()
    type_codes: frozenset[str] = frozenset()
    choice: bool = False
    fixed: Any = None
    fixed_type: str | None = None  # the [x] suffix of fixed[x], e.g. "CodeableConcept"
    pattern: Any = None
    pattern_type: str | None = None
    binding: Binding | None = None
    invariants: tuple[Invariant, ...] = ()
    is_modifier: bool = False
    content_reference: str | None = None  # "#Questionnaire.item", resolved lazily by the walk
    slicing: Slicing | None = None
    children: dict[str, ElementNode] = field(default_factory=dict)
    # JSON key -> (child, type code, allowed by this definition, is the `_name` partner)
    keys: dict[str, tuple[ElementNode, str, bool, bool]] = field(default_factory=dict)
    required: tuple[ElementNode, ...] = ()  # children whose min > 0 and whose min is checked here
    # what this node checks (all True in base trees; in profile trees only what differs from base)
    check_min: bool = True
    check_max: bool = True
    check_binding: bool = True
    check_targets: bool = True
    # fast path: a primitive node with nothing to check but ele-1 and `_name` extensions
    plain: bool = False



@dataclass(slots=True, eq=False)
class CompiledStructure:
    url: str
    version: str | None
    type: str  # StructureDefinition.type
    kind: str  # resource | complex-type | primitive-type | logical
    is_profile: bool  # derivation = constraint
    root: ElementNode | None = None
    by_id: dict[str, ElementNode] = field(default_factory=dict)
    # extension definitions only (StructureDefinition.context, extensibility.html#context)
    contexts: tuple[tuple[str, str], ...] = ()
    modifier_extension: bool = False
    canonical: str = ""  # url|version, for diagnostics and memo keys

    def __post_init__(self) -> None:
        self.canonical = f"{self.url}|{self.version}" if self.version else self.url


@dataclass(slots=True, eq=False)
class Scope:
    """The resource an element belongs to, for %resource / %rootResource (validation.md VAL-60):
    `resource` is the nearest resource, `root` the resource that contains it (itself unless it is
    a contained resource), `expression` where the resource sits ("Patient.contained[0]")."""

    resource: dict
    root: dict
    expression: str
    is_contained: bool = False
    is_outermost: bool = True  # the resource being validated, not one nested in it


@dataclass(slots=True, eq=False)
class Item:
    """One repetition of an element in the instance: its JSON value, the `_name` partner of a
    primitive, its type (from the definition or the choice key), where it is, and whether the
    definition allows that type."""

    value: Any
    ext: Any
    type_code: str
    expression: str
    allowed: bool = True
