"""Terminology bindings on code, Coding, CodeableConcept, Quantity, string and uri (validation.md §A3.5, VAL-20..22).

| strength   | not in the value set          | membership unknown (no expansion)     |
|------------|-------------------------------|---------------------------------------|
| required   | error `code-invalid`          | information `binding-unknown`, accept |
| extensible | warning `code-invalid`        | information `binding-unknown`, accept |
| preferred / example | nothing              | nothing                               |

- `code` (and a `string` / `uri` element bound to a value set): the value itself must be a code
  of the value set (membership by code alone);
- `Coding` and `Quantity`: system + code;
- `CodeableConcept`: at least one coding in the set. For a required binding, a concept with no
  coding (text only) fails (VAL-20); for an extensible one it passes (terminologies.html
  "extensible": text or a coding from elsewhere may convey a concept the set lacks).

Diagnostics name the element, the value set and the profile, never the code sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhir_server.validation.issues import Issue
from fhir_server.validation.ports import Membership
from fhir_server.validation.profile.model import Binding

__all__ = ["check_binding", "Member"]

Member = Callable[[str, "str | None", str], Membership]


def _codings(value: Any, type_code: str) -> list[tuple[str | None, str]] | None:
    """(system, code) pairs to test; None when the value has nothing codable to test."""
    if type_code in ("code", "string", "uri"):
        return [(None, value)] if isinstance(value, str) else None
    if not isinstance(value, dict):
        return None
    if type_code in ("Coding", "Quantity"):
        code = value.get("code")
        if not isinstance(code, str):
            return None
        system = value.get("system")
        return [(system if isinstance(system, str) else None, code)]
    if type_code == "CodeableConcept":
        pairs = []
        for coding in value.get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                pairs.append((system if isinstance(system, str) else None, coding["code"]))
        return pairs
    return None


def _without(reason: str, code: str) -> str:
    """The terminology's reason with the instance's code taken out (no patient data in an
    OperationOutcome): quoted occurrences, then the bare code as a whole word."""
    if not reason or not code:
        return reason
    reason = reason.replace(f"'{code}'", "the code").replace(f'"{code}"', "the code")
    return re.sub(rf"(?<![\w-]){re.escape(code)}(?![\w-])", "the code", reason)


def check_binding(
    binding: Binding, value: Any, type_code: str, member: Member, expression: str, where: str
) -> Issue | None:
    """One issue (or None) for `value` of type `type_code` under `binding`; `where` names the element
    and profile for the diagnostics."""
    strength = binding.strength
    if strength not in ("required", "extensible") or not binding.value_set:
        return None
    pairs = _codings(value, type_code)
    if pairs is None:
        return None
    value_set = binding.value_set
    if not pairs:  # a CodeableConcept with text (or extensions) only
        if strength == "required" and type_code == "CodeableConcept":
            return Issue(
                "error",
                "code-invalid",
                expression,
                f"No coding provided; a coding from the value set {value_set} is required ({where})",
                "binding-required",
            )
        return None
    reasons = []
    for system, code in pairs:
        answer = member(value_set, system, code)
        if answer.status == "member":
            return None
        if answer.status == "unknown":
            reasons.append(_without(answer.reason, code))
    if reasons:
        reason = "; ".join(sorted({r for r in reasons if r})) or "the value set cannot be expanded here"
        return Issue(
            "information",
            "informational",
            expression,
            f"Could not confirm that the code is in the {strength} value set {value_set}: {reason} ({where})",
            "binding-unknown",
        )
    if strength == "required":
        what = "None of the codings provided are" if type_code in ("Coding", "CodeableConcept", "Quantity") else "The code provided is not"
        return Issue(
            "error",
            "code-invalid",
            expression,
            f"{what} in the value set {value_set}, and a code from this value set is required ({where})",
            "binding-required",
        )
    return Issue(
        "warning",
        "code-invalid",
        expression,
        f"None of the codings provided are in the value set {value_set}, and a coding should come from this "
        f"value set unless it has no suitable code ({where})",
        "binding-extensible",
    )
