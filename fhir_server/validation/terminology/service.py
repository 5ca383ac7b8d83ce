"""`LocalTerminology`: the validators' `Terminology` (ports.py), answered from local definitions.

No terminology server: value sets are expanded from the core, v2, v3 and guide definitions
(expansion.py), lazily on first use and cached per value set url|version (research/validation.md
PERF-03); code system indexes are built on first use too. Construction only sorts the guide's
resources by url, so a server or a test pays for what it asks.

Answers are three-valued (VAL-20..VAL-22): "unknown" carries a reason naming the value set and
the code system that could not be checked, for the caller to report as an information issue.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ports import Membership
from .code_systems import CodeSystemIndex
from .expansion import Expansion, expand_value_set, unknown_everything
from .external import external_system, system_name
from .logic import MEMBER, not_member, unknown
from .registry import TerminologyResources

__all__ = ["LocalTerminology"]


class LocalTerminology:
    """Value set membership, code lookups and displays from local definitions.

    `extra`: the guide's own ValueSets and CodeSystems; they take precedence over core resources
    with the same url."""

    def __init__(self, extra: Iterable[dict] = ()) -> None:
        self._resources = TerminologyResources(extra)
        self._indexes: dict[str, CodeSystemIndex | None] = {}
        self._expansions: dict[tuple[str, str | None], Expansion] = {}
        self._in_progress: set[tuple[str, str | None]] = set()
        self.expansions_computed = 0  # how many value sets were expanded (not served from the cache)

    # -- Terminology protocol ----------------------------------------------------------------------

    def check(self, value_set: str, system: str | None, code: str) -> Membership:
        """Whether (system, code) is in the value set (`url` or `url|version`); system None is a
        bare `code` element, checked by code alone."""
        if not value_set:
            return unknown("no value set given")
        if not code:
            return not_member("an empty code is not in any value set")
        resource, reason = self._resources.value_set(value_set)
        if resource is None:
            return unknown(reason)
        return self._answer(self._expansion_of(resource), value_set, system, code)

    def check_resource(self, value_set: dict, system: str | None, code: str) -> Membership:
        """Like `check`, against a ValueSet resource in hand rather than a canonical: a contained
        one (Questionnaire.item.answerValueSet "#id") or one posted to $validate-code. Its own
        expansion is not cached (it has no stable identity); value sets it includes are."""
        if not code:
            return not_member("an empty code is not in any value set")
        label = value_set.get("url") or f"#{value_set.get('id', '')}"
        return self._answer(expand_value_set(value_set, self._nested, self._index), label, system, code)

    def display(self, system: str, code: str) -> str | None:
        """The code system's display for the code (else its first designation), None when the
        code system or the code is not held."""
        index = self._index(system)
        if index is None or not index.holds_codes:
            return None
        concept = index.lookup(code)
        if concept is None:
            return None
        return concept.display or (concept.designations[0] if concept.designations else None)

    def displays(self, system: str, code: str) -> tuple[str, ...]:
        """Every display the code system gives the code (display, then designations): a Coding's
        display matching any of them is not a mismatch (designations are alternative displays,
        R4 CodeSystem.concept.designation)."""
        index = self._index(system)
        concept = index.lookup(code) if index is not None and index.holds_codes else None
        if concept is None:
            return ()
        return tuple(dict.fromkeys([*([concept.display] if concept.display else []), *concept.designations]))

    def code_in_system(self, system: str, code: str) -> bool | None:
        """True/False when we can tell; None when we do not hold the whole code system."""
        index = self._index(system)
        if index is not None and index.holds_codes:
            if index.lookup(code) is not None:
                return True
            return False if index.complete else None
        external = external_system(system)
        return external.code_in_system(code) if external else None

    # -- resources and expansions --------------------------------------------------------------------

    def value_set(self, url: str) -> dict | None:
        """The ValueSet resource for `url` or `url|version` (for serving and for messages)."""
        return self._resources.value_set(url)[0]

    def code_system(self, url: str) -> dict | None:
        return self._resources.code_system(url)

    def expansion(self, value_set: str) -> frozenset[tuple[str, str]] | None:
        """All (system, code) pairs of the value set, or None when it cannot be enumerated locally."""
        resource, _ = self._resources.value_set(value_set)
        if resource is None:
            return None
        result = self._expansion_of(resource)
        return result.codes if result.complete else None

    def _expansion_of(self, resource: dict) -> Expansion:
        key = (resource.get("url", ""), resource.get("version"))
        cached = self._expansions.get(key)
        if cached is not None:
            return cached
        if key in self._in_progress:
            # not cached: the value set's own expansion, still being built, will be
            return unknown_everything(f"value set {key[0]} includes itself")
        self._in_progress.add(key)
        try:
            result = expand_value_set(resource, self._nested, self._index)
        finally:
            self._in_progress.discard(key)
        self.expansions_computed += 1
        self._expansions[key] = result
        return result

    def _nested(self, canonical: str) -> Expansion:
        resource, reason = self._resources.value_set(canonical)
        if resource is None:
            return unknown_everything(reason)
        return self._expansion_of(resource)

    def _index(self, system: str) -> CodeSystemIndex | None:
        if system not in self._indexes:
            resource = self._resources.code_system(system)
            usable = resource is not None and resource.get("content") != "supplement"
            self._indexes[system] = CodeSystemIndex.build(resource) if usable else None
        return self._indexes[system]

    def _canonical_code(self, system: str | None, code: str) -> str:
        """The code as the code system spells it, for the one case-insensitive system."""
        if system is None:
            return code
        index = self._index(system)
        if index is None or index.case_sensitive:
            return code
        concept = index.lookup(code)
        return concept.code if concept else code

    def _answer(self, expansion: Expansion, label: str, system: str | None, code: str) -> Membership:
        code = self._canonical_code(system, code)
        answer = expansion.membership(system, code)
        if answer.status == "not-member" and not answer.reason and system:
            answer = not_member(self._why_not(system, code))
        return self._explain(answer, label, system, code)

    def _why_not(self, system: str, code: str) -> str:
        """A hint for messages when the code exists but cannot be chosen (R4 notSelectable)."""
        index = self._index(system)
        concept = index.lookup(code) if index is not None else None
        if concept is not None and not concept.selectable:
            return f"'{code}' is an abstract grouping concept (notSelectable) of {system}"
        return ""

    @staticmethod
    def _explain(answer: Membership, value_set: str, system: str | None, code: str) -> Membership:
        if answer.status == "member":
            return MEMBER
        what = f"'{code}'" + (f" from {system_name(system)}" if system else "")
        if answer.status == "not-member":
            detail = f" ({answer.reason})" if answer.reason else ""
            return not_member(f"{what} is not in value set {value_set}{detail}")
        return unknown(f"could not check whether {what} is in value set {value_set}: {answer.reason}")
