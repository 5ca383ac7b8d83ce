"""QuestionnaireResponse-against-Questionnaire validation (R4 questionnaireresponse.html
"Links to Questionnaire", research/validation.md Part B).

API:
    validate_response(response, questionnaire, terminology) -> list[Issue]
        a QuestionnaireResponse against the Questionnaire its `questionnaire` canonical resolves
        to (resolving it is the caller's job); answerValueSet membership goes through the
        `Terminology` port (fhir_server/validation/ports.py).
    check_questionnaire(questionnaire) -> list[Issue]
        the que-* invariants and enableWhen rules of a Questionnaire (for its own write path).
    questionnaire_index(questionnaire), clear_index_cache()
        the compiled, cached form the walk uses (items.py).

Modules: items.py (index by linkId, cached by url|version|versionId|lastUpdated), compare.py
(value equality / order), enable_when.py (enableWhen / enableBehavior), answers.py (one answer
value), validate.py (the walk), definition.py (que-*), report.py (issue wording).

Rule ids (Issue.rule) of validate_response — severity error unless noted; "completion" rules
are errors for `completed` / `amended` responses and warnings for every other status (B4.1):
    qr-resource-type           the response is not a QuestionnaireResponse
    qr-questionnaire-mismatch  `questionnaire` names another Questionnaire (url, pinned version,
                               or #id); warning when the response names none
    que-2                      the Questionnaire defines a linkId twice: nothing else is checked
    qr-linkid-unknown          linkId missing, or defined nowhere in the Questionnaire (not-found)
    qr-linkid-misplaced        linkId defined elsewhere in the tree, not at this nesting level
    qr-order                   items out of the Questionnaire's order
    qr-repeats                 a non-repeating item answered twice, or appearing in two QR items
    qrs-2                      a repeating question split over several QR items (answers belong
                               in one item; SDC sdcqr-2 / R5 qrs-2)
    qrs-1                      one QR item with both answer and item
    qr-nested-item             a question's children under item instead of answer.item
    qr-group-answer            a group with answers
    qr-display-answered        a display item with answers or items
    qr-text-mismatch           item.text differs from the Questionnaire's (Q-13)
    qr-required                (completion) required enabled item, group or answer value absent
    qr-disabled-answered       (completion) an item disabled by enableWhen has answers or items
    qr-answer-type             answer value[x] does not fit the item type (B1)
    qr-answer-option           answer not among the answerOptions (Codings by system + code)
    qr-answer-valueset         answer not in answerValueSet (error, code-invalid); information
                               when the terminology cannot tell ("unknown", never a silent pass)
    qr-max-length              string / text / url / open-choice text longer than maxLength
    qr-answer-range            outside the minValue / maxValue extensions (inclusive)
    qr-answer-unit             Quantity unit not among questionnaire-unitOption
    qr-attachment              attachment without contentType, of a type not in the mimeType
                               extension, with data inconsistent with size / hash, or above maxSize
check_questionnaire uses que-0 .. que-13 (their R4 keys), que-enablewhen-target and
que-enablewhen-type, que-option-type (definition.py).

Diagnostics name the rule, the linkId and the Questionnaire's url|version; they never contain an
answer value, and a client-supplied linkId only when it looks like an identifier.
"""

from fhir_server.validation.questionnaire.definition import check_questionnaire
from fhir_server.validation.questionnaire.items import clear_index_cache, questionnaire_index
from fhir_server.validation.questionnaire.validate import validate_response

__all__ = ["check_questionnaire", "clear_index_cache", "questionnaire_index", "validate_response"]
