"""The input of the prescribing rules (PrescribingContext), their output (Refusal), and the small
readers of FHIR JSON they share. Resources are plain dicts (FHIR JSON), never mutated here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
INTAKE_CONCEPT = "http://fhir-async-telehealth.example/CodeSystem/intake-concept"

__all__ = ["PrescribingContext", "Refusal", "RXNORM", "INTAKE_CONCEPT"]


@dataclass(frozen=True)
class Refusal:
    """One broken rule. `message` never carries patient data (no answers, names, states or ids);
    `expression` is the FHIRPath location in the MedicationRequest the refusal is about.
    `detail` is an optional machine-readable reason (e.g. a contraindication id): it may reveal a
    clinical fact, so it is for the prescriber's OperationOutcome, not for logs."""

    rule_id: str
    message: str
    expression: str
    detail: str | None = None


@dataclass(frozen=True)
class PrescribingContext:
    """Everything the rules look at, already read from the store by the caller.

    medication_request: the MedicationRequest about to be made active
    encounter: its Encounter (None when it has none or it cannot be read)
    location: the Encounter's Location (where the patient is)
    practitioner: the requester Practitioner
    task: the visit's review Task (focus = the Encounter)
    intake_responses: the visit's QuestionnaireResponses (others are ignored: see visit_intakes)
    questionnaires: canonical (with or without |version) -> Questionnaire, beyond the shipped ones
    medication: the Medication a non-contained medicationReference points to, if read
    now: the time the check runs (aware); used when authoredOn is absent
    """

    medication_request: dict
    encounter: dict | None = None
    location: dict | None = None
    practitioner: dict | None = None
    task: dict | None = None
    intake_responses: list[dict] = field(default_factory=list)
    questionnaires: dict[str, dict] = field(default_factory=dict)
    medication: dict | None = None
    now: datetime | None = None

    def current_time(self) -> datetime:
        return self.now if self.now is not None else datetime.now(timezone.utc)


# --- references -------------------------------------------------------------------------------

def ref(element: dict | None) -> str | None:
    """The literal reference of a Reference element, or None."""
    if not isinstance(element, dict):
        return None
    value = element.get("reference")
    return value if isinstance(value, str) and value else None


def refers_to(element: dict | None, resource: dict | None) -> bool:
    """Whether a Reference points at the resource: `Type/id`, also as the tail of an absolute URL
    (`.../Type/id`, with or without `/_history/n`)."""
    target = ref(element)
    if target is None or not resource or not resource.get("id"):
        return False
    wanted = f"{resource['resourceType']}/{resource['id']}"
    target = re.sub(r"/_history/[^/]+$", "", target)
    return target == wanted or target.endswith("/" + wanted)


def same_reference(a: dict | None, b: dict | None) -> bool:
    ra, rb = ref(a), ref(b)
    if ra is None or rb is None:
        return False
    tail = lambda r: "/".join(re.sub(r"/_history/[^/]+$", "", r).split("/")[-2:])  # noqa: E731
    return tail(ra) == tail(rb)


def codings(concept: dict | None) -> list[dict]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def version_less(canonical: str | None) -> str:
    return (canonical or "").split("|", 1)[0]


# --- time ---------------------------------------------------------------------------------------

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_instant(value: str, tz: timezone | None = None) -> datetime | None:
    """A FHIR dateTime with a time part, as an aware datetime (a naive one gets `tz`, else UTC)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz or timezone.utc)


def _date_bounds(value: str) -> tuple[date, date] | None:
    """A FHIR date of any precision (YYYY, YYYY-MM, YYYY-MM-DD) as its first and last day."""
    m = _PARTIAL.match(value)
    if not m:
        return None
    year, month, day = int(m.group(1)), m.group(2), m.group(3)
    if day:
        d = date(year, int(month), int(day))
        return d, d
    if month:
        first = date(year, int(month), 1)
        nxt = date(year + (first.month == 12), first.month % 12 + 1, 1)
        return first, nxt - timedelta(days=1)
    return date(year, 1, 1), date(year, 12, 31)


def period_covers(period: dict | None, when: datetime) -> bool:
    """Whether `when` (aware) falls in a Period. A missing bound is open. A date-only bound is
    compared with `when`'s calendar date as written (its own offset), both ends inclusive: a
    licence valid to 2027-06-30 covers that whole day wherever the prescriber is."""
    period = period or {}
    for key in ("start", "end"):
        value = period.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return False
        if "T" in value:
            bound = parse_instant(value, when.tzinfo if isinstance(when.tzinfo, timezone) else None)
            if bound is None:
                return False
            if (key == "start" and when < bound) or (key == "end" and when > bound):
                return False
        else:
            bounds = _date_bounds(value)
            if bounds is None:
                return False
            day = when.date()
            if (key == "start" and day < bounds[0]) or (key == "end" and day > bounds[1]):
                return False
    return True


def authored_time(value: str | None) -> datetime | None:
    """MedicationRequest.authoredOn as an aware datetime (a bare date: its start, UTC)."""
    if not isinstance(value, str):
        return None
    if "T" in value:
        return parse_instant(value)
    bounds = _date_bounds(value)
    return datetime.combine(bounds[0], time(), timezone.utc) if bounds else None
