"""evaluation-fits-medication: the visit has a completed intake that the protocol table counts as an
evaluation for this medication (or, for a medication in no protocol, the 'unlisted' intakes)."""

from __future__ import annotations

from ..intake import answers_questionnaire, visit_intakes
from ..medication import medication_terms
from ..registry import rule
from ..model import Refusal

RULE_ID = "evaluation-fits-medication"


@rule(RULE_ID, checks="a completed intake of the visit answers a Questionnaire that the medication's protocol counts "
      "as its evaluation (medications in no protocol: the 'unlisted' intakes, or refused when that is null)",
      data="profiles/prescribing-protocols.json (protocols[].questionnaires, medications; unlisted)",
      defaults={"intakeStatuses": ["completed"]})
def check(ctx, data, params):
    terms = medication_terms(ctx)
    if not terms.resolved:
        return [Refusal(RULE_ID, "The medication cannot be read, so its protocol cannot be found.", terms.expression)]
    matched = data.protocols.for_medication(terms)
    if matched:
        accepted = {q for protocol, _ in matched for q in protocol.questionnaires}
        names = ", ".join(p.id for p, _ in matched)
    elif data.protocols.unlisted_questionnaires is not None:
        accepted, names = set(data.protocols.unlisted_questionnaires), "general"
    else:
        return [Refusal(RULE_ID, "This medication is in no asynchronous-visit protocol, so it cannot be prescribed "
                        "in an asynchronous visit.", terms.expression)]
    completed = [qr for qr in visit_intakes(ctx) if qr.get("status") in params["intakeStatuses"]]
    if any(answers_questionnaire(qr, q) for qr in completed for q in accepted):
        return []
    return [Refusal(RULE_ID, f"The visit has no completed intake that counts as an evaluation for this medication "
                    f"(protocol: {names}).", terms.expression)]
