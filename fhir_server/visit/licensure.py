"""Where a clinician may practise: a Practitioner's licences, as claiming a visit and prescribing
(prescribing/rules/licence.py) both read them.

A licence is a Practitioner.qualification carrying Da Vinci Plan-Net's `practitioner-qualification`
extension (profiles/structuredefinitions/practitioner-qualification.json): sub-extension `status`
(active) and `whereValid` (USPS state codes in system https://www.usps.com/), valid during
qualification.period (partial dates cover their whole month or year: prescribing/model.py).
"""

from __future__ import annotations

from datetime import datetime

from .prescribing.model import period_covers

__all__ = ["QUALIFICATION_EXTENSION", "USPS", "licences", "licensed_states", "is_licensed"]

QUALIFICATION_EXTENSION = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/practitioner-qualification"
USPS = "https://www.usps.com/"


def licences(practitioner: dict) -> list[tuple[str | None, set[str], dict]]:
    """(status, states where valid, period) of every Plan-Net qualification of the Practitioner."""
    out = []
    for qualification in practitioner.get("qualification") or []:
        if not isinstance(qualification, dict):
            continue
        for ext in qualification.get("extension") or []:
            if not isinstance(ext, dict) or ext.get("url") != QUALIFICATION_EXTENSION:
                continue
            status, states = None, set()
            for sub in ext.get("extension") or []:
                if not isinstance(sub, dict):
                    continue
                if sub.get("url") == "status":
                    status = sub.get("valueCode")
                elif sub.get("url") == "whereValid":
                    for coding in (sub.get("valueCodeableConcept") or {}).get("coding") or []:
                        if isinstance(coding, dict) and coding.get("system") == USPS and coding.get("code"):
                            states.add(coding["code"])
            out.append((status, states, qualification.get("period") or {}))
    return out


def licensed_states(practitioner: dict, at: datetime, statuses: frozenset[str] = frozenset({"active"})) -> set[str]:
    return {state for status, states, period in licences(practitioner)
            if status in statuses and period_covers(period, at) for state in states}


def is_licensed(practitioner: dict, state: str, at: datetime) -> bool:
    return state in licensed_states(practitioner, at)
