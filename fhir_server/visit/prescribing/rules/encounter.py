"""encounter-is-async-visit: the prescription belongs to a submitted async visit of the same
patient, whose review Task the requester owns and is working on."""

from __future__ import annotations

from ..model import Refusal, refers_to, same_reference
from ..registry import rule

RULE_ID = "encounter-is-async-visit"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@rule(RULE_ID, checks="encounter present and referenced, same patient as MedicationRequest.subject, class VR, status "
      "arrived/in-progress; its review Task (focus = the Encounter) owned by the requester and in-progress",
      data="Encounter, Task (parameters: encounterClasses, encounterStatuses, taskStatuses)",
      defaults={"encounterClasses": ["VR"], "encounterStatuses": ["arrived", "in-progress"],
                "taskStatuses": ["in-progress"]})
def check(ctx, data, params):
    mr, encounter, task = ctx.medication_request, ctx.encounter, ctx.task
    at = "MedicationRequest.encounter"
    if encounter is None or not refers_to(mr.get("encounter"), encounter):
        return [Refusal(RULE_ID, "A prescription in an asynchronous visit needs its visit Encounter (encounter).", at)]
    out = []
    if not same_reference(encounter.get("subject"), mr.get("subject")):
        out.append(Refusal(RULE_ID, "The Encounter is not the prescription subject's visit.", "MedicationRequest.subject"))
    visit_class = encounter.get("class") or {}
    if not (visit_class.get("system") in (None, ACT_CODE) and visit_class.get("code") in params["encounterClasses"]):
        out.append(Refusal(RULE_ID, "The Encounter is not an asynchronous (virtual) visit.", at))
    if encounter.get("status") not in params["encounterStatuses"]:
        out.append(Refusal(RULE_ID, "The visit is not submitted and under review (Encounter status "
                           f"must be one of {', '.join(params['encounterStatuses'])}).", at))
    if task is None or not refers_to(task.get("focus"), encounter):
        out.append(Refusal(RULE_ID, "The visit has no review Task.", at))
    else:
        if not same_reference(task.get("owner"), mr.get("requester")):
            out.append(Refusal(RULE_ID, "The requester does not own the visit's review Task.", "MedicationRequest.requester"))
        if task.get("status") not in params["taskStatuses"]:
            out.append(Refusal(RULE_ID, "The visit's review Task is not in progress.", at))
    return out

