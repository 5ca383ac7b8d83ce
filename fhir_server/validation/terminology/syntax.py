"""Syntax checks for codes of systems we cannot enumerate.

Each function returns None when the code is well-formed, else the reason it is not. A malformed
code cannot be in the system, so these turn some "unknown" answers into certain "not-member"
ones; a well-formed code proves nothing by itself except for the grammar-defined systems (MIME
types, language tags, UCUM), where being well-formed is what membership means.
"""

from __future__ import annotations

import re

__all__ = [
    "mime_type_error",
    "language_tag_error",
    "loinc_error",
    "snomed_error",
    "digits_error",
    "pattern_error",
]

# -- urn:ietf:bcp:13 — MIME media types --------------------------------------------------------------

# RFC 6838 §4.2: type-name / subtype-name are restricted-names; §4.2.7 lists no others than these
# top-level types (plus `haptics`, RFC 9695). RFC 2045 §5.1: parameters `; attribute=value`, the
# value a token or a quoted-string. FHIR uses parameters, e.g. `application/fhir+json; fhirVersion=4.0`.
_TOP_LEVEL_TYPES = frozenset(
    {"application", "audio", "example", "font", "haptics", "image", "message", "model", "multipart", "text", "video"}
)
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&\-^_.+]{0,126}"
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\.)*"'
_MIME = re.compile(
    rf"(?P<type>{_RESTRICTED_NAME})/(?P<subtype>{_RESTRICTED_NAME})"
    rf"(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*"
)


def mime_type_error(code: str) -> str | None:
    match = _MIME.fullmatch(code)
    if match is None:
        return "not a MIME type (RFC 6838 'type/subtype', optionally with '; name=value' parameters)"
    if match["type"].lower() not in _TOP_LEVEL_TYPES:
        return f"'{match['type']}' is not a registered top-level media type (RFC 6838 §4.2)"
    return None


# -- urn:ietf:bcp:47 — language tags ------------------------------------------------------------------

# RFC 5646 §2.1 ABNF, case-insensitive. Well-formedness only: whether each subtag is registered in
# the IANA Language Subtag Registry is not checked (the registry is not held here), with one
# exception that costs nothing: the ABNF also allows 4- and 5-8-letter primary language subtags,
# but §2.2.1 reserves them and none is registered, so "english" or "latn" is rejected.
_ALNUM = "[a-z0-9]"
_LANGTAG = (
    r"[a-z]{2,3}(?:-[a-z]{3}){0,3}"  # language, optional extlang
    r"(?:-[a-z]{4})?"  # script
    r"(?:-(?:[a-z]{2}|[0-9]{3}))?"  # region
    rf"(?:-(?:{_ALNUM}{{5,8}}|[0-9]{_ALNUM}{{3}}))*"  # variants
    rf"(?:-[0-9a-wy-z](?:-{_ALNUM}{{2,8}})+)*"  # extensions
    rf"(?:-x(?:-{_ALNUM}{{1,8}})+)?"  # private use
)
_PRIVATE_USE = rf"x(?:-{_ALNUM}{{1,8}})+"
_GRANDFATHERED = (
    "en-gb-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|i-navajo|i-pwn|i-tao|i-tay|"
    "i-tsu|sgn-be-fr|sgn-be-nl|sgn-ch-de|art-lojban|cel-gaulish|no-bok|no-nyn|zh-guoyu|zh-hakka|zh-min|"
    "zh-min-nan|zh-xiang"
)
_LANGUAGE_TAG = re.compile(rf"{_LANGTAG}|{_PRIVATE_USE}|{_GRANDFATHERED}", re.IGNORECASE)


def language_tag_error(code: str) -> str | None:
    if _LANGUAGE_TAG.fullmatch(code):
        return None
    return "not a well-formed language tag (RFC 5646 §2.1)"


# -- http://loinc.org ----------------------------------------------------------------------------------

_LOINC_NUMERIC = re.compile(r"(\d{1,7})-(\d)")
_LOINC_PART = re.compile(r"L[AGLP]\d{1,8}-\d")  # answers (LA), groups (LG), answer lists (LL), parts (LP)


def loinc_error(code: str) -> str | None:
    """LOINC codes are `digits-checkdigit` with a mod-10 (Luhn) check digit (LOINC Users' Guide,
    "Check digit"), or LA/LG/LL/LP part, answer and group codes."""
    match = _LOINC_NUMERIC.fullmatch(code)
    if match:
        return None if _luhn_digit(match[1]) == int(match[2]) else "the LOINC check digit does not match"
    if _LOINC_PART.fullmatch(code):
        return None
    return "not a LOINC code ('nnnnn-n', or an LA/LG/LL/LP code)"


def _luhn_digit(payload: str) -> int:
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:  # the rightmost payload digit is doubled
            digit = digit * 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return (10 - total % 10) % 10


# -- http://snomed.info/sct ----------------------------------------------------------------------------

_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_SCTID_PARTITIONS = frozenset({"00", "01", "02", "10", "11", "12"})


def snomed_error(code: str) -> str | None:
    """An SCTID is 6-18 digits: item id, partition identifier, Verhoeff check digit (SNOMED CT
    Technical Implementation Guide, "SCTID data structure"). A code with other characters may be
    a post-coordinated expression, which FHIR allows in Coding.code: it is not rejected here."""
    if not code.isdigit():
        return None
    if not 6 <= len(code) <= 18 or code[0] == "0":
        return "not an SCTID (6 to 18 digits, no leading zero)"
    if code[-3:-1] not in _SCTID_PARTITIONS:
        return f"not an SCTID (partition identifier '{code[-3:-1]}' is not defined)"
    check = 0
    for position, char in enumerate(reversed(code)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(char)]]
    return None if check == 0 else "not an SCTID (the Verhoeff check digit does not match)"


# -- simple shapes ----------------------------------------------------------------------------------------


def digits_error(code: str, name: str, max_length: int = 20) -> str | None:
    if code.isdigit() and len(code) <= max_length:
        return None
    return f"not a {name} code (digits only)"


def pattern_error(code: str, pattern: re.Pattern[str], name: str, shape: str) -> str | None:
    if pattern.fullmatch(code):
        return None
    return f"not a {name} code ({shape})"
