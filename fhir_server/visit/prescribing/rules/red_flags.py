"""red-flags-absent: no item coded red-flag (intake-concept) is answered true in the visit's intakes."""

from __future__ import annotations

from ..intake import answers, coded_link_ids, visit_intakes
from ..model import Refusal
from ..registry import rule

RULE_ID = "red-flags-absent"


@rule(RULE_ID, checks="no item coded red-flag (intake-concept) answered true in the visit's intakes; an intake whose "
      "Questionnaire is unknown is refused (its red flags cannot be found)",
      data="Questionnaire.item.code (profiles/questionnaires/, or the context's questionnaires)", defaults={})
def check(ctx, data, params):
    at = "MedicationRequest.encounter"
    for qr in visit_intakes(ctx):
        questionnaire = data.questionnaire(qr.get("questionnaire"), ctx.questionnaires)
        if questionnaire is None:
            return [Refusal(RULE_ID, "An intake of the visit answers an unknown Questionnaire, so its red flags "
                            "cannot be checked.", at)]
        for link_id in coded_link_ids(questionnaire, "red-flag"):
            if any(a.get("valueBoolean") is True for a in answers(qr, link_id)):
                return [Refusal(RULE_ID, "The visit's intake reports an emergency warning sign: the patient needs "
                                "emergency or in-person care, not an asynchronous prescription.", at)]
    return []
