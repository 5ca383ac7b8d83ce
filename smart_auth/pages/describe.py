"""Plain-language text for SMART scopes, as shown on the consent page.

    patient/Observation.rs                      -> Read and search your observations
    user/*.cruds                                -> Create, read, update, delete and search all record
                                                   types the user can access
    patient/Observation.rs?category=...|laboratory -> Read and search your observations (only category laboratory)

Anything this module does not recognise (or a malformed resource scope) is shown as written: the
consent page must never hide what an app asks for behind friendlier but wrong words.
"""

from __future__ import annotations

import re

from ..scopes import (FHIR_USER, LAUNCH, LAUNCH_ENCOUNTER, LAUNCH_PATIENT, OFFLINE_ACCESS, ONLINE_ACCESS, OPENID,
                      PROFILE, InvalidScope, ResourceScope, parse_resource_scope)

_WHO = "Know who you are"
OTHER_SCOPES = {
    OPENID: _WHO,
    FHIR_USER: _WHO,
    PROFILE: _WHO,
    LAUNCH: "Open in the context of the current EHR session",
    LAUNCH_PATIENT: "Know which patient record is open",
    LAUNCH_ENCOUNTER: "Know which visit (encounter) is open",
    OFFLINE_ACCESS: "Keep access while you are away (until you revoke it)",
    ONLINE_ACCESS: "Keep access while you are signed in",
}

_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}

# Resource types whose plain plural is unclear; the rest are split at capitals and pluralised
# (MedicationRequest -> medication requests).
RESOURCE_NAMES = {
    "Patient": "personal details",
    "AllergyIntolerance": "allergies and intolerances",
    "Binary": "files",
    "Communication": "messages",
    "CommunicationRequest": "message requests",
    "DocumentReference": "documents",
    "Encounter": "visits (encounters)",
    "Media": "photos and recordings",
    "Person": "person records",
    "QuestionnaireResponse": "questionnaire answers",
}


def resource_plural(resource_type: str) -> str:
    """'MedicationRequest' -> 'medication requests'."""
    if resource_type in RESOURCE_NAMES:
        return RESOURCE_NAMES[resource_type]
    words = [w.lower() for w in re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", resource_type)] or [resource_type]
    last = words[-1]
    if re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    elif re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    else:
        last += "s"
    return " ".join([*words[:-1], last])


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _restriction(query: tuple[tuple[str, str], ...]) -> str:
    """(('category', 'http://...|laboratory'),) -> ' (only category laboratory)'."""
    if not query:
        return ""
    parts = []
    for name, value in query:
        code = value.rsplit("|", 1)[-1] if "|" in value else value
        parts.append(f"{name} {code or value}")
    return " (only " + ", ".join(parts) + ")"


def _describe_resource(scope: ResourceScope, whose: str = "your") -> str:
    verbs = _join([_VERBS[p] for p in scope.permissions])
    verbs = verbs[0].upper() + verbs[1:]
    if scope.context == "patient":
        what = f"all {whose} records" if scope.resource_type == "*" else f"{whose} " + resource_plural(scope.resource_type)
    elif scope.context == "user":
        what = ("all record types" if scope.resource_type == "*" else resource_plural(scope.resource_type)) \
            + " the user can access"
    else:  # system
        what = ("all records" if scope.resource_type == "*" else "all " + resource_plural(scope.resource_type)) \
            + " of every patient"
    return f"{verbs} {what}{_restriction(scope.query)}"


def describe_scope(scope: str, *, whose: str = "your") -> str:
    """Human text for one SMART scope (or a few, space-separated: 'openid fhirUser' -> 'Know who you are').
    `whose` names the record's owner in patient/ scopes: "your" for a patient, "the patient's" for a clinician."""
    words = scope.split()
    if len(words) > 1:
        texts: list[str] = []
        for word in words:
            text = describe_scope(word, whose=whose)
            if text not in texts:
                texts.append(text)
        return "; ".join(texts)
    if scope in OTHER_SCOPES:
        return OTHER_SCOPES[scope]
    try:
        parsed = parse_resource_scope(scope)
    except InvalidScope:
        return scope
    return scope if parsed is None else _describe_resource(parsed, whose)
