"""Refuse to build a SCRIPT message that cannot be sent safely (research/ncpdp.md section 4.5).

A mapper collects every problem first and then raises one `UnprocessableEntity` (422) whose
OperationOutcome has one issue per problem, each naming the FHIR element to fix by its FHIRPath
in `expression`. Diagnostics describe the rule, never the data: no names, dates, identifiers or
drug text of the patient end up in an OperationOutcome (which is logged and shown to clients).

Also here: the format checks of the identifiers a message carries (NCPDPID, NPI, DEA number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fhir_server.errors import OutcomeIssue, UnprocessableEntity

_NCPDPID = re.compile(r"\d{7}")
_NPI = re.compile(r"\d{10}")
_DEA = re.compile(r"[A-Z][A-Z9]\d{7}")
# XML 1.0 Char production: lxml refuses anything else, so it is refused here first, by element.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class Refusals:
    """The problems found so far with one message's FHIR sources."""

    message_type: str
    issues: list[OutcomeIssue] = field(default_factory=list)

    def add(self, expression: str, diagnostics: str) -> None:
        issue = OutcomeIssue("error", "business-rule", diagnostics, expression)
        if issue not in self.issues:
            self.issues.append(issue)

    def text(self, value: object, expression: str, what: str, *, max_length: int | None = None,
             required: bool = False) -> str | None:
        """A string element, trimmed; None when absent. Refuses (adds a problem) when it is required
        and missing, too long for its SCRIPT element, or holds characters XML cannot carry."""
        if value is not None and not isinstance(value, str):
            self.add(expression, f"{what} must be a string")
            return None
        text = value.strip() if isinstance(value, str) else ""
        if not text:
            if required:
                self.add(expression, f"{what} is required for a {self.message_type} and is missing")
            return None
        if _NOT_XML_CHAR.search(text):
            self.add(expression, f"{what} contains control characters that an XML message cannot carry")
            return None
        if max_length is not None and len(text) > max_length:
            self.add(expression, f"{what} is longer than the {max_length} characters its SCRIPT element allows")
            return None
        return text

    def raise_if_any(self) -> None:
        if self.issues:
            count = len(self.issues)
            raise UnprocessableEntity(
                f"the {self.message_type} cannot be sent: {count} problem{'s' if count > 1 else ''}",
                issues=list(self.issues),
            )


def is_ncpdpid(value: str) -> bool:
    """NCPDP Provider ID: seven digits (ncpdp.md 4.2)."""
    return bool(_NCPDPID.fullmatch(value))


def is_npi(value: str) -> bool:
    """Ten digits whose last is the Luhn check digit over the prefix 80840 + the first nine
    (CMS, "Requirements for NPI check digit"; ncpdp.md 4.3)."""
    if not _NPI.fullmatch(value):
        return False
    return _luhn_valid("80840" + value)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def npi_check_digit(first_nine: str) -> str:
    """The check digit that completes a 9-digit NPI stem (for making test data)."""
    for digit in "0123456789":
        if is_npi(first_nine + digit):
            return digit
    raise ValueError("not a 9-digit stem")


def is_dea_number(value: str) -> bool:
    """Two letters (registrant type, then the registrant's last initial or 9) and seven digits, the
    last being (d1 + d3 + d5 + 2 * (d2 + d4 + d6)) mod 10 (THO NamingSystem USDEANumber)."""
    if not _DEA.fullmatch(value):
        return False
    d = [int(c) for c in value[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]
