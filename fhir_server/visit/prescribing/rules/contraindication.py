"""no-contraindication: no intake answer of the visit contraindicates the medication, by the protocol
table's contraindications (linkId + answer, enableWhen-style)."""

from __future__ import annotations

from ..intake import answers_questionnaire, condition_holds, visit_intakes
from ..medication import medication_terms
from ..model import Refusal
from ..registry import rule

RULE_ID = "no-contraindication"


@rule(RULE_ID, checks="no answer in the visit's intakes meets a contraindication that the protocol table lists for "
      "the medication (e.g. nitrates = true blocks every PDE5 inhibitor)",
      data="profiles/prescribing-protocols.json (protocols[].contraindications)", defaults={})
def check(ctx, data, params):
    terms = medication_terms(ctx)
    if not terms.resolved:
        return [Refusal(RULE_ID, "The medication cannot be read, so its contraindications cannot be checked.",
                        terms.expression)]
    intakes = visit_intakes(ctx)
    out = []
    for protocol, medications in data.protocols.for_medication(terms):
        for ci in protocol.contraindications:
            if not any(ci.applies_to(m.id) for m in medications):
                continue
            hit = any(answers_questionnaire(qr, ci.questionnaire) and any(condition_holds(qr, c) for c in ci.when)
                      for qr in intakes)
            if hit:
                out.append(Refusal(RULE_ID, f"An intake answer contraindicates this medication in an asynchronous "
                                   f"visit (protocol {protocol.id}); see the visit's intake.", terms.expression,
                                   detail=ci.id))
    return out
