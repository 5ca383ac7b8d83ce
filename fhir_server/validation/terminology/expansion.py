"""Expansion of a ValueSet from its `compose` (R4 valueset.html "Value Set Expansion").

An `Expansion` is exact where it can be and honest where it cannot:

- `codes`: the (system, code) pairs that are certainly in the value set;
- `open_systems`: the systems (None: any system) for which codes outside `codes` may still be in it,
  because part of the compose could not be enumerated (a filter over SNOMED CT, the whole of
  UCUM, a fragment code system, an unknown nested value set);
- `rule`: for those, the three-valued membership test (logic.py), built from the same compose.

An expansion with no open system is complete, and `codes` is the value set.

Compose semantics (R4 ValueSet.compose):
- include: a system part (its listed `concept`s, else the whole code system narrowed by every
  `filter`) intersected with each `valueSet` it names; includes are united;
- exclude: the same, subtracted;
- whole-system and filter includes leave out notSelectable (abstract) concepts, and inactive ones
  when `compose.inactive` is false; explicitly listed concepts are taken as listed, even over
  systems we do not hold (research/validation.md VAL-22: extensional value sets over SNOMED CT,
  CPT, ... are checked locally).
A ValueSet without a compose, or whose compose cannot be enumerated, is answered from a stored
`expansion.contains` when that expansion is complete (no paging), abstract entries left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import reduce

from ..ports import Membership
from .code_systems import CodeSystemIndex
from .external import external_system, system_name
from .filters import FilterNotEvaluable, evaluate_filter
from .logic import MEMBER, NOT_MEMBER, Rule, all_of, any_of, negate, not_member, unknown

__all__ = ["Expansion", "expand_value_set"]

Pair = tuple[str, str]
ANY_SYSTEM = None


class Expansion:
    """Certain members (`codes`), the systems still open (`open_systems`), and the `rule` deciding those."""

    __slots__ = ("codes", "open_systems", "rule", "_by_code")

    def __init__(
        self, codes: frozenset[Pair], open_systems: frozenset[str | None] = frozenset(), rule: Rule | None = None
    ) -> None:
        self.codes = codes
        self.open_systems = open_systems
        self.rule = rule
        self._by_code: frozenset[str] | None = None  # built on the first bare-code check

    @property
    def complete(self) -> bool:
        return not self.open_systems

    def is_open(self, system: str | None) -> bool:
        return bool(self.open_systems) and (system in self.open_systems or ANY_SYSTEM in self.open_systems)

    def systems(self) -> frozenset[str]:
        return frozenset(system for system, _ in self.codes)

    def membership(self, system: str | None, code: str) -> Membership:
        """Three-valued membership; `system` None is a bare `code` (membership by code alone)."""
        if system is None:
            if self._by_code is None:
                self._by_code = frozenset(c for _, c in self.codes)
            if code in self._by_code:
                return MEMBER
            return self.rule(None, code) if self.rule and self.open_systems else NOT_MEMBER
        if (system, code) in self.codes:
            return MEMBER
        if self.rule is not None and self.is_open(system):
            return self.rule(system, code)
        return NOT_MEMBER


def enumerated(codes: Iterable[Pair]) -> Expansion:
    return Expansion(frozenset(codes))


def open_system(system: str, rule: Callable[[str], Membership], known: Iterable[Pair] = ()) -> Expansion:
    """Some codes of `system` known (`known`), the rest decided by `rule(code)`."""
    return Expansion(frozenset(known), frozenset({system}), lambda _system, code: rule(code))


def unknown_everything(reason: str) -> Expansion:
    return Expansion(frozenset(), frozenset({ANY_SYSTEM}), lambda _system, _code: unknown(reason))


def union(a: Expansion, b: Expansion) -> Expansion:
    if a.complete and b.complete:
        return enumerated(a.codes | b.codes)
    return Expansion(
        a.codes | b.codes,
        a.open_systems | b.open_systems,
        lambda s, c: any_of((a.membership(s, c), b.membership(s, c))),
    )


def intersection(a: Expansion, b: Expansion) -> Expansion:
    if a.complete and b.complete:
        return enumerated(a.codes & b.codes)
    candidates = set(a.open_systems | b.open_systems)
    if ANY_SYSTEM in a.open_systems:
        candidates |= b.systems()
    if ANY_SYSTEM in b.open_systems:
        candidates |= a.systems()

    def possible(x: Expansion, system: str | None) -> bool:
        return x.is_open(system) or system in x.systems()

    def still_open(system: str | None) -> bool:
        if system is ANY_SYSTEM:
            return ANY_SYSTEM in a.open_systems and ANY_SYSTEM in b.open_systems
        return possible(a, system) and possible(b, system)

    opened = frozenset(s for s in candidates if still_open(s))
    return Expansion(a.codes & b.codes, opened, lambda s, c: all_of((a.membership(s, c), b.membership(s, c))))


def difference(a: Expansion, b: Expansion) -> Expansion:
    def rule(s: str | None, c: str) -> Membership:
        return all_of((a.membership(s, c), negate(b.membership(s, c))))

    if b.complete:
        kept = a.codes - b.codes
        return enumerated(kept) if a.complete else Expansion(kept, a.open_systems, rule)
    # a certain member of `a` that `b` may exclude becomes uncertain, and its system open
    kept = frozenset(pair for pair in a.codes if pair not in b.codes and not b.is_open(pair[0]))
    uncertain = frozenset(pair[0] for pair in a.codes - kept if pair not in b.codes)
    return Expansion(kept, a.open_systems | uncertain, rule)


# -- compose --------------------------------------------------------------------------------------------

Nested = Callable[[str], Expansion]  # expansion of another value set, by canonical
IndexOf = Callable[[str], "CodeSystemIndex | None"]


def expand_value_set(value_set: dict, nested: Nested, index_of: IndexOf) -> Expansion:
    url = value_set.get("url", "(no url)")
    compose = value_set.get("compose")
    stored = _stored_expansion(value_set)
    if compose:
        result = _compose(compose, nested, index_of)
        if result.complete or stored is None:
            return result
    if stored is not None:
        return stored
    return unknown_everything(f"value set {url} has neither a compose nor a complete expansion")


def _compose(compose: dict, nested: Nested, index_of: IndexOf) -> Expansion:
    # R4 ValueSet.compose.inactive: absent means "implementation decides"; we keep inactive codes
    keep_inactive = compose.get("inactive") is not False
    included = [_component(c, nested, index_of, keep_inactive) for c in compose.get("include", [])]
    result = reduce(union, included, enumerated(()))
    for component in compose.get("exclude", []):
        result = difference(result, _component(component, nested, index_of, keep_inactive))
    return result


def _component(component: dict, nested: Nested, index_of: IndexOf, keep_inactive: bool) -> Expansion:
    parts: list[Expansion] = []
    if component.get("system"):
        # a few core v2 value sets write the table version into the system ("...v2-0006|2.4"), and
        # the v2 file holds those versions under such urls; instances carry the plain url
        versioned = component["system"]
        system = versioned.partition("|")[0]
        if component.get("concept"):
            parts.append(enumerated((system, c["code"]) for c in component["concept"] if c.get("code")))
        else:
            index = index_of(versioned) if versioned != system else None
            parts.append(_system_part(system, component.get("filter", []), index or index_of(system), keep_inactive))
    # "the content of the value sets are intersected" (R4 ValueSet.compose.include.valueSet)
    parts.extend(nested(canonical) for canonical in component.get("valueSet", []))
    if not parts:
        return enumerated(())
    return reduce(intersection, parts)


def _system_part(system: str, filters: list[dict], index: CodeSystemIndex | None, keep_inactive: bool) -> Expansion:
    if index is not None and index.holds_codes:
        return _held_system_part(system, index, filters, keep_inactive)
    return _external_system_part(system, filters)


def _held_system_part(system: str, index: CodeSystemIndex, filters: list[dict], keep_inactive: bool) -> Expansion:
    usable = frozenset(c.code for c in index.concepts.values() if c.selectable and (keep_inactive or c.active))
    try:
        codes = reduce(lambda acc, flt: acc & evaluate_filter(index, flt), filters, usable)
    except FilterNotEvaluable as exc:
        reason = f"{exc}; the filter needs a terminology server"

        def undecided(code: str) -> Membership:
            concept = index.lookup(code)
            if concept is None and index.complete:
                return not_member(f"'{code}' is not a code of {system}")
            if concept is not None and concept.code not in usable:
                return not_member(f"'{code}' is not selectable (abstract) or inactive in {system}")
            return unknown(reason)

        return open_system(system, undecided)
    pairs = frozenset((system, code) for code in codes)
    if index.complete:
        return enumerated(pairs)
    # a fragment/example code system: the codes it lists are real, the rest of the system is not
    # here; a negative filter (is-not-a, not-in, exists false) proves nothing over part of a system
    reason = f"code system {system} is only partly held (content = {index.content})"
    known = frozenset() if any(_is_negative(flt) for flt in filters) else pairs

    def unlisted(code: str) -> Membership:
        concept = index.lookup(code)
        if concept is not None and not filters and concept.code not in usable:
            return not_member(f"'{code}' is not selectable (abstract) or inactive in {system}")
        return unknown(reason)

    return open_system(system, unlisted, known)


def _is_negative(flt: dict) -> bool:
    op = flt.get("op")
    return op in {"is-not-a", "not-in"} or (op == "exists" and str(flt.get("value")).lower() == "false")


def _external_system_part(system: str, filters: list[dict]) -> Expansion:
    external = external_system(system)
    name = system_name(system)

    def whole(code: str) -> Membership:
        if external is not None:
            return external.membership(code)
        return unknown(f"code system {system} is not known to this server, so its codes cannot be checked")

    if not filters:
        return open_system(system, whole)
    checks = [_code_only_filter(flt, name) for flt in filters]

    def filtered(code: str) -> Membership:
        # the filters first, so that an unknown answer names the filter (a malformed code is still
        # rejected: not-member wins over unknown whatever the order)
        return all_of([*(check(code) for check in checks), whole(code)])

    return open_system(system, filtered)


def _code_only_filter(flt: dict, name: str) -> Callable[[str], Membership]:
    """A filter on a system we do not hold: decidable only when it tests the code string itself
    (e.g. iso3166-1-3: `code regex [A-Z]{3}`); otherwise unknown, saying which filter it was."""
    prop, op, value = flt.get("property"), flt.get("op"), flt.get("value", "")
    described = f"filter {prop} {op} {value} on {name} cannot be evaluated without a terminology server"
    if prop in {"code", "concept"} and op in {"=", "in", "not-in", "regex"}:
        listed = {v.strip() for v in value.split(",")}

        def by_code(code: str) -> Membership:
            if op == "=":
                hit = code == value
            elif op == "in":
                hit = code in listed
            elif op == "not-in":
                hit = code not in listed
            else:
                try:
                    hit = re.fullmatch(value, code) is not None
                except re.error:
                    return unknown(f"filter {prop} regex {value!r} on {name} is not a valid regular expression")
            return MEMBER if hit else not_member(f"'{code}' does not satisfy filter {prop} {op} {value}")

        return by_code
    return lambda _code: unknown(described)


# -- stored expansions -------------------------------------------------------------------------------------


def _stored_expansion(value_set: dict) -> Expansion | None:
    """The ValueSet's own `expansion`, if it is complete: not a page (no `offset`, `total` equal
    to what is there), entries with system and code, abstract ones left out (R4
    ValueSet.expansion.contains.abstract: "the user cannot select the code directly")."""
    expansion = value_set.get("expansion")
    if not expansion or expansion.get("offset"):
        return None
    entries = list(_walk_contains(expansion.get("contains", [])))
    total = expansion.get("total")
    if total is not None and total != len(entries):
        return None
    return enumerated(
        (entry["system"], entry["code"])
        for entry in entries
        if entry.get("system") and entry.get("code") and not entry.get("abstract")
    )


def _walk_contains(entries: list[dict]) -> Iterator[dict]:
    for entry in entries:
        yield entry
        yield from _walk_contains(entry.get("contains", []))
