"""licence-in-patient-state: the requester holds a licence, valid on authoredOn (or now), in the
state where the patient is (the Encounter's Location address.state)."""

from __future__ import annotations

from ..model import Refusal, authored_time, period_covers, refers_to
from ..registry import rule

RULE_ID = "licence-in-patient-state"
@rule(RULE_ID, checks="the requester holds a licence (Plan-Net practitioner-qualification: status active, whereValid "
      "= the Encounter Location's address.state, qualification.period covering authoredOn, or now when absent)",
      data="Practitioner.qualification; Location.address.state", defaults={"licenceStatuses": ["active"]})
def check(ctx, data, params):
    from ...licensure import licences  # (visit/licensure.py reads periods with ..model: import here, not at load)

    mr = ctx.medication_request
    practitioner = ctx.practitioner
    if practitioner is None or not refers_to(mr.get("requester"), practitioner):
        return [Refusal(RULE_ID, "The requester must be a Practitioner whose licences can be checked.",
                        "MedicationRequest.requester")]
    location = ctx.location
    state = ((location or {}).get("address") or {}).get("state")
    if location is None or not state or (ctx.encounter is not None and not any(
            refers_to(entry.get("location"), location) for entry in ctx.encounter.get("location") or [])):
        return [Refusal(RULE_ID, "The state where the patient is (the visit Encounter's Location address.state) "
                        "is unknown, so the prescriber's licence cannot be checked.", "MedicationRequest.encounter")]
    when = authored_time(mr.get("authoredOn")) if mr.get("authoredOn") else ctx.current_time()
    if when is None:
        return [Refusal(RULE_ID, "authoredOn is not a valid dateTime.", "MedicationRequest.authoredOn")]
    statuses = set(params["licenceStatuses"])
    if any(status in statuses and state in states and period_covers(period, when)
           for status, states, period in licences(practitioner)):
        return []
    return [Refusal(RULE_ID, "The prescriber holds no active licence, valid on the prescription's date, in the "
                    "state where the patient is.", "MedicationRequest.requester")]
