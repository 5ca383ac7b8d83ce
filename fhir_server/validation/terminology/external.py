"""Code systems whose content this server does not hold, and what can still be said about them.

research/validation.md VAL-22: SNOMED CT, LOINC, RxNorm, CPT, ICD-10-CM and the like cannot be
expanded without a terminology server, and a code from them is never accepted by guess. What a
value set *lists* over them is checked exactly (expansion.py); what it includes intensionally
(the whole system, or a filter) is answered here, per system, in one of three ways:

- "grammar": the system is defined by a grammar, so a well-formed code is a code of the system
  and a malformed one is not: MIME types (urn:ietf:bcp:13), language tags (urn:ietf:bcp:47),
  UCUM units (http://unitsofmeasure.org).
- "partial-list": we hold a list of current codes (ISO 4217 currencies, ISO 3166-1 alpha-2
  countries, iso_codes.py): a listed code is a member, a malformed one is not, a well-formed
  unlisted one is unknown.
- "opaque": only a syntax check, which can reject a malformed code (e.g. an SCTID whose Verhoeff
  check digit is wrong) but never accept one: well-formed codes are unknown.

A system not listed here (and not held as a CodeSystem) is unknown altogether.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from ..ports import Membership
from .iso_codes import ISO_3166_ALPHA2, ISO_4217
from .logic import MEMBER, not_member, unknown
from .syntax import digits_error, language_tag_error, loinc_error, mime_type_error, pattern_error, snomed_error
from .ucum import ucum_error

__all__ = ["ExternalSystem", "external_system", "system_name"]

SyntaxCheck = Callable[[str], "str | None"]


@dataclass(frozen=True)
class ExternalSystem:
    url: str
    name: str
    kind: Literal["grammar", "partial-list", "opaque"]
    syntax_error: SyntaxCheck | None = None
    listed: frozenset[str] = frozenset()

    def membership(self, code: str) -> Membership:
        """Whether `code` is a code of this system (for a value set including the whole system)."""
        error = self.syntax_error(code) if self.syntax_error else None
        if error:
            return not_member(f"'{code}' is not a code of {self.name} ({self.url}): {error}")
        if self.kind == "grammar" or code in self.listed:
            return MEMBER
        if self.kind == "partial-list":
            return unknown(f"'{code}' is well-formed but not among the {self.name} codes this server holds")
        return unknown(f"{self.name} ({self.url}) cannot be expanded without a terminology server")

    def code_in_system(self, code: str) -> bool | None:
        error = self.syntax_error(code) if self.syntax_error else None
        if error:
            return False
        if self.kind == "grammar" or code in self.listed:
            return True
        return None


def _shape(pattern: str, name: str, shape: str) -> SyntaxCheck:
    return partial(pattern_error, pattern=re.compile(pattern), name=name, shape=shape)


_SYSTEMS = {
    system.url: system
    for system in (
        ExternalSystem("urn:ietf:bcp:13", "BCP 13 MIME types", "grammar", mime_type_error),
        ExternalSystem("urn:ietf:bcp:47", "BCP 47 language tags", "grammar", language_tag_error),
        ExternalSystem("http://unitsofmeasure.org", "UCUM", "grammar", ucum_error),
        ExternalSystem(
            "urn:iso:std:iso:4217", "ISO 4217 currency", "partial-list", _shape("[A-Z]{3}", "ISO 4217", "AAA"), ISO_4217
        ),
        # the FHIR system holds alpha-2, alpha-3 and numeric codes (R4 terminologies-systems.html);
        # only alpha-2 codes are listed here, the others can only be checked for shape
        ExternalSystem(
            "urn:iso:std:iso:3166",
            "ISO 3166-1 country",
            "partial-list",
            _shape("[A-Z]{2}|[A-Z]{3}|[0-9]{3}", "ISO 3166-1", "AA, AAA or nnn"),
            ISO_3166_ALPHA2,
        ),
        ExternalSystem(
            "urn:iso:std:iso:3166:-2",
            "ISO 3166-2 subdivision",
            "opaque",
            _shape("[A-Z]{2}-[A-Z0-9]{1,3}", "ISO 3166-2", "AA-XXX"),
        ),
        ExternalSystem("http://snomed.info/sct", "SNOMED CT", "opaque", snomed_error),
        ExternalSystem("http://loinc.org", "LOINC", "opaque", loinc_error),
        ExternalSystem(
            "http://www.nlm.nih.gov/research/umls/rxnorm", "RxNorm", "opaque", partial(digits_error, name="RxNorm")
        ),
        # CPT: five characters, the last a digit or F/T/U/M... (Category II/III, PLA); or a two-character modifier
        ExternalSystem(
            "http://www.ama-assn.org/go/cpt",
            "CPT",
            "opaque",
            _shape("[0-9]{4}[0-9A-Z]|[0-9A-Z]{2}", "CPT", "nnnnX, or a 2-character modifier"),
        ),
        ExternalSystem(
            "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
            "HCPCS Level II",
            "opaque",
            _shape("[A-Z][0-9]{4}|[0-9A-Z]{2}", "HCPCS Level II", "Annnn, or a 2-character modifier"),
        ),
        ExternalSystem(
            "http://hl7.org/fhir/sid/icd-10-cm",
            "ICD-10-CM",
            "opaque",
            _shape(r"[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?", "ICD-10-CM", "ANN.XXXX"),
        ),
        # WHO ICD-10 also codes chapters and blocks ("A00-A09"): no shape check
        ExternalSystem("http://hl7.org/fhir/sid/icd-10", "ICD-10", "opaque"),
        ExternalSystem("http://hl7.org/fhir/sid/cvx", "CVX", "opaque", partial(digits_error, name="CVX", max_length=3)),
        # NDC has 10/11-digit package codes and 8/9-digit product codes, hyphenated in several ways: no shape check
        ExternalSystem("http://hl7.org/fhir/sid/ndc", "NDC", "opaque"),
        ExternalSystem("http://nucc.org/provider-taxonomy", "NUCC provider taxonomy", "opaque"),
        ExternalSystem("http://unstats.un.org/unsd/methods/m49/m49.htm", "UN M49 regions", "opaque"),
    )
}


def external_system(url: str) -> ExternalSystem | None:
    """What we know of a code system we do not hold, or None when we know nothing of it."""
    return _SYSTEMS.get(url)


def system_name(url: str) -> str:
    """A readable name for messages: "SNOMED CT (http://snomed.info/sct)" or the url itself."""
    system = _SYSTEMS.get(url)
    return f"{system.name} ({url})" if system else url
