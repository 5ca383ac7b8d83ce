"""Three-valued (Kleene) logic over `Membership`, so that a value set made of parts we can and
cannot enumerate still answers exactly where it can.

A compose is a set expression: includes are united, `include.valueSet` entries are intersected
with the include's own system part, excludes are subtracted (R4 valueset.html "Value Set
Composition"). When one operand is "unknown" for a code (a filter over SNOMED CT, say), the
result is unknown only if the known operands do not already decide it: `member OR unknown` is
member, `not-member AND unknown` is not-member. This is what keeps "never a silent pass"
(research/validation.md VAL-22) without giving up answers that are certain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..ports import Membership

__all__ = ["MEMBER", "NOT_MEMBER", "Rule", "unknown", "not_member", "any_of", "all_of", "negate"]

MEMBER = Membership("member")
NOT_MEMBER = Membership("not-member")

# A membership test for the codes of one system that a value set does not enumerate:
# rule(system, code) -> Membership. `system` is None for a bare `code` element.
Rule = Callable[[str | None, str], Membership]


def unknown(reason: str) -> Membership:
    return Membership("unknown", reason)


def not_member(reason: str) -> Membership:
    return Membership("not-member", reason)


def any_of(answers: Iterable[Membership]) -> Membership:
    """Kleene OR: member if any is member; else unknown if any is unknown; else not-member."""
    first_unknown: Membership | None = None
    first_no: Membership | None = None
    for answer in answers:
        if answer.status == "member":
            return answer
        if answer.status == "unknown":
            first_unknown = first_unknown or answer
        elif first_no is None or (answer.reason and not first_no.reason):
            first_no = answer  # keep an explanation if any operand has one
    return first_unknown or first_no or NOT_MEMBER


def all_of(answers: Iterable[Membership]) -> Membership:
    """Kleene AND: not-member if any is not-member; else unknown if any is unknown; else member."""
    first_unknown: Membership | None = None
    first_yes: Membership | None = None
    for answer in answers:
        if answer.status == "not-member":
            return answer
        if answer.status == "unknown":
            first_unknown = first_unknown or answer
        else:
            first_yes = first_yes or answer
    return first_unknown or first_yes or MEMBER


def negate(answer: Membership) -> Membership:
    """Kleene NOT (for `compose.exclude`): unknown stays unknown, with its reason."""
    if answer.status == "unknown":
        return answer
    return NOT_MEMBER if answer.status == "member" else MEMBER
