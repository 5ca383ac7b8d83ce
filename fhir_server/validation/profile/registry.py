"""Compiled StructureDefinitions, cached by canonical (validation.md PERF-01).

Every tree is compiled on first use and kept for the life of the validator: the base resource and
datatype definitions the base pass walks into, the profiles named by `meta.profile`,
`type.profile` and `targetProfile`, and extension definitions by url. A definition that is unknown
or has no snapshot is remembered as such, with the reason, so it is reported, never re-read.
"""

from __future__ import annotations

from fhir_server.validation.definitions import CORE_PREFIX, split_canonical
from fhir_server.validation.ports import Definitions
from fhir_server.validation.profile.compile import Compiler
from fhir_server.validation.profile.model import CompiledStructure, ElementNode, TypeRef

__all__ = ["Registry"]


class Registry:
    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.compiler = Compiler(definitions)
        self._structures: dict[str, CompiledStructure | None] = {}
        self._reasons: dict[str, str] = {}
        self._targets: dict[tuple[str, ...], frozenset[str] | None] = {}
        self._content: dict[tuple[int, str], ElementNode | None] = {}

    def structure(self, canonical: str) -> CompiledStructure | None:
        """The compiled definition for `url` or `url|version`; None when unknown or unusable
        (then `reason(canonical)` says why)."""
        try:
            return self._structures[canonical]
        except KeyError:
            pass
        sd = self.definitions.structure_definition(canonical)
        compiled: CompiledStructure | None = None
        if sd is None:
            self._reasons[canonical] = "it could not be found"
        else:
            try:
                compiled = self.compiler.compile(sd)
            except Exception as exc:  # a malformed definition: reported as unusable, not a crash per write
                self._reasons[canonical] = f"it could not be compiled ({type(exc).__name__})"
            else:
                if compiled is None:
                    self._reasons[canonical] = "it has no snapshot (validation is against the snapshot)"
        self._structures[canonical] = compiled
        return compiled

    def remember(self, sd: dict) -> None:
        """Compile `sd` under its url when the definitions do not resolve that url themselves."""
        url = str(sd.get("url", ""))
        if url and self.structure(url) is None:
            try:
                self._structures[url] = self.compiler.compile(sd)
            except Exception as exc:
                self._reasons[url] = f"it could not be compiled ({type(exc).__name__})"

    def reason(self, canonical: str) -> str:
        return self._reasons.get(canonical, "it could not be used")

    def type_tree(self, type_code: str) -> CompiledStructure | None:
        """The core definition of a datatype or resource type."""
        return self.structure(CORE_PREFIX + type_code)

    def target_types(self, type_ref: TypeRef) -> frozenset[str] | None:
        """Resource types a Reference/canonical may point at, from its targetProfiles; None = any
        (no targetProfile, `Resource`, or a target profile we do not hold)."""
        key = type_ref.target_profiles
        if key in self._targets:
            return self._targets[key]
        types: set[str] = set()
        result: frozenset[str] | None = None
        if key:
            for url in key:
                base, _ = split_canonical(url)
                if base.startswith(CORE_PREFIX) and "/" not in base[len(CORE_PREFIX):] and base[len(CORE_PREFIX):][:1].isupper():
                    name = base[len(CORE_PREFIX):]
                    sd = self.definitions.structure_definition(base)
                    name = str(sd.get("type", name)) if sd is not None else name
                else:
                    sd = self.definitions.structure_definition(url)
                    if sd is None:
                        types = set()
                        break
                    name = str(sd.get("type", ""))
                if name in ("Resource", "DomainResource"):
                    types = set()
                    break
                types.add(name)
            result = frozenset(types) if types else None
        self._targets[key] = result
        return result

    def content_reference(self, node: ElementNode) -> ElementNode | None:
        """The element a `contentReference` (`#Questionnaire.item`, or `url#path`) points at: in the
        node's own tree, else in the core definition of the path's type."""
        reference = node.content_reference or ""
        cache_key = (id(node.structure), reference)
        if cache_key in self._content:
            return self._content[cache_key]
        target_id = reference.split("#", 1)[-1]
        found = node.structure.by_id.get(target_id)
        if found is None:
            base = self.type_tree(target_id.split(".", 1)[0])
            found = base.by_id.get(target_id) if base is not None else None
        self._content[cache_key] = found
        return found
