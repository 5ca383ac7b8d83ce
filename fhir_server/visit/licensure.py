"""Where a clinician may practise: the states of a Practitioner's active licences on a date.

A licence is a Practitioner.qualification carrying Da Vinci Plan-Net's `practitioner-qualification`
extension (profiles/structuredefinitions/practitioner-qualification.json): sub-extension `status`
(active) and `whereValid` (a USPS state code in system https://www.usps.com/), valid during
qualification.period. A date-only period bound covers that whole day.
"""

from __future__ import annotations

from datetime import date

__all__ = ["QUALIFICATION_EXTENSION", "USPS", "licensed_states", "is_licensed"]

QUALIFICATION_EXTENSION = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/practitioner-qualification"
USPS = "https://www.usps.com/"


def _in_period(period: object, day: str) -> bool:
    """Whether the day (YYYY-MM-DD) falls in the period; a missing bound is open."""
    if not isinstance(period, dict):
        return True
    start, end = period.get("start"), period.get("end")
    return (not isinstance(start, str) or start[:10] <= day) and (not isinstance(end, str) or day <= end[:10])


def licensed_states(practitioner: dict, on: date) -> set[str]:
    day = on.isoformat()
    states: set[str] = set()
    for qualification in practitioner.get("qualification") or []:
        if not isinstance(qualification, dict) or not _in_period(qualification.get("period"), day):
            continue
        for ext in qualification.get("extension") or []:
            if not isinstance(ext, dict) or ext.get("url") != QUALIFICATION_EXTENSION:
                continue
            parts = {p.get("url"): p for p in ext.get("extension") or [] if isinstance(p, dict)}
            if (parts.get("status") or {}).get("valueCode") != "active":
                continue
            where = (parts.get("whereValid") or {}).get("valueCodeableConcept") or {}
            states.update(c["code"] for c in where.get("coding") or []
                          if isinstance(c, dict) and c.get("system") == USPS and isinstance(c.get("code"), str))
    return states


def is_licensed(practitioner: dict, state: str, on: date) -> bool:
    return state in licensed_states(practitioner, on)
