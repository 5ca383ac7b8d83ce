"""The prescribing rules of an asynchronous visit: a small, pure rule engine (no storage, no HTTP)
that decides whether a MedicationRequest may be made active.

    rules = load_rule_set()                 # profiles/prescribing-rules.json + the data files
    refusals = rules.check(PrescribingContext(medication_request, encounter, location, practitioner,
                                              task, intake_responses, questionnaires, now=now))
    # [] = allowed; each Refusal(rule_id, message, expression[, detail]) names its rule

| id | what it checks | where its data lives |
|---|---|---|
| `encounter-is-async-visit` | `encounter` present and referenced; same patient as `subject`; class VR; status arrived or in-progress; its review Task (focus = the Encounter) owned by the requester and in-progress | the Encounter and Task in the context; statuses and classes in the rule's parameters |
| `licence-in-patient-state` | the requester holds a licence: Plan-Net `practitioner-qualification` status active, `whereValid` (USPS) = the Encounter Location's `address.state`, `qualification.period` covering `authoredOn` (or now) | Practitioner.qualification; Location.address.state |
| `no-controlled-substance` | no RxNorm code of the medication (or of a Medication's ingredients) is a listed RXCUI, and no listed ingredient or brand name occurs as a whole word in a display or text; the refusal says a synchronous visit is needed | `profiles/controlled-substances.json`; brand names in the rule's parameters (default list in `rules/controlled.py`) |
| `red-flags-absent` | no item coded `red-flag` (intake-concept) answered true in the visit's intakes; an intake of an unknown Questionnaire is refused | `Questionnaire.item.code` (`profiles/questionnaires/`, or the context's questionnaires) |
| `evaluation-fits-medication` | a completed intake of the visit answers a Questionnaire that the medication's protocol counts as its evaluation (medications in no protocol: the `unlisted` intakes) | `profiles/prescribing-protocols.json` |
| `no-contraindication` | no intake answer of the visit meets a contraindication the protocol lists for the medication | `profiles/prescribing-protocols.json` (`contraindications`, enableWhen-style conditions checked against the shipped intakes at load) |

Which rules run, in which order, with which parameters: `profiles/prescribing-rules.json` (unknown rule
ids or parameters are a RuleConfigError at load). A medicationReference that cannot be read is refused
by the medication rules (fail closed). Messages carry no patient data.
"""

from .data import RuleConfigError, RuleData
from .engine import RuleSet, build_rule_set, load_rule_data, load_rule_set
from .model import PrescribingContext, Refusal
from .registry import RULES, Rule

__all__ = ["RULES", "PrescribingContext", "Refusal", "Rule", "RuleConfigError", "RuleData", "RuleSet",
           "build_rule_set", "load_rule_data", "load_rule_set"]
