"""Reading intakes: which QuestionnaireResponses belong to the visit, their answers by linkId, the
Questionnaire items carrying an intake-concept code, and conditions on answers written like
Questionnaire.item.enableWhen (`{"linkId", "operator", "answerBoolean" | "answerInteger" | ...}`)."""

from __future__ import annotations

from .model import INTAKE_CONCEPT, PrescribingContext, refers_to, same_reference, version_less

OPERATORS = {"=", "!=", ">", "<", ">=", "<=", "exists"}
ANSWER_KEYS = ("answerBoolean", "answerInteger", "answerDecimal", "answerCoding", "answerString", "answerDate")


def visit_intakes(ctx: PrescribingContext, *, include_errors: bool = False) -> list[dict]:
    """The QuestionnaireResponses of the visit: those whose `encounter` is the context's Encounter
    (all given ones when there is no Encounter to compare with) and whose subject is the
    prescription's; `entered-in-error` ones are left out unless asked for."""
    subject = ctx.medication_request.get("subject")
    out = []
    for qr in ctx.intake_responses:
        if not isinstance(qr, dict) or qr.get("resourceType") != "QuestionnaireResponse":
            continue
        if ctx.encounter is not None and not refers_to(qr.get("encounter"), ctx.encounter):
            continue
        if qr.get("subject") is not None and not same_reference(qr.get("subject"), subject):
            continue
        if qr.get("status") == "entered-in-error" and not include_errors:
            continue
        out.append(qr)
    return out


def answers(qr: dict, link_id: str) -> list[dict]:
    """Every answer (the answer elements) given to items with this linkId, at any depth."""
    found: list[dict] = []

    def walk(items):
        for item in items or []:
            if item.get("linkId") == link_id:
                found.extend(a for a in item.get("answer") or [] if isinstance(a, dict))
            walk(item.get("item"))
            for answer in item.get("answer") or []:
                walk(answer.get("item"))

    walk(qr.get("item"))
    return found


def coded_link_ids(questionnaire: dict, concept: str) -> set[str]:
    """The linkIds of the Questionnaire's items coded `concept` in intake-concept."""
    out: set[str] = set()

    def walk(items):
        for item in items or []:
            if any(c.get("system") == INTAKE_CONCEPT and c.get("code") == concept for c in item.get("code") or []):
                out.add(item["linkId"])
            walk(item.get("item"))

    walk(questionnaire.get("item"))
    return out


def item_types(questionnaire: dict) -> dict[str, str]:
    """linkId -> item type, for checking the protocol table against the shipped intakes."""
    out: dict[str, str] = {}

    def walk(items):
        for item in items or []:
            out[item["linkId"]] = item.get("type", "")
            walk(item.get("item"))

    walk(questionnaire.get("item"))
    return out


def answers_questionnaire(qr: dict, canonical: str) -> bool:
    """Version-less match of QuestionnaireResponse.questionnaire against a canonical url."""
    return version_less(qr.get("questionnaire")) == version_less(canonical)


def _answer_value(answer: dict):
    for key, value in answer.items():
        if key.startswith("value"):
            return key[len("value"):], value
    return None, None


def condition_holds(qr: dict, condition: dict) -> bool:
    """Whether the response meets one enableWhen-style condition (any answer to the linkId does)."""
    given = answers(qr, condition["linkId"])
    operator = condition.get("operator", "=")
    if operator == "exists":
        return bool(given) == bool(condition.get("answerBoolean", True))
    key = next(k for k in ANSWER_KEYS if k in condition)
    wanted, kind = condition[key], key[len("answer"):]
    for answer in given:
        got_kind, got = _answer_value(answer)
        if kind == "Coding":
            if got_kind != "Coding":
                continue
            equal = got.get("code") == wanted.get("code") and (
                "system" not in wanted or got.get("system") == wanted.get("system"))
            if (operator == "=" and equal) or (operator == "!=" and not equal):
                return True
            continue
        if kind in ("Integer", "Decimal") and got_kind in ("Integer", "Decimal"):
            pass
        elif got_kind != kind:
            continue
        if _compare(got, operator, wanted):
            return True
    return False


def _compare(got, operator: str, wanted) -> bool:
    try:
        return {
            "=": lambda: got == wanted, "!=": lambda: got != wanted,
            ">": lambda: got > wanted, "<": lambda: got < wanted,
            ">=": lambda: got >= wanted, "<=": lambda: got <= wanted,
        }[operator]()
    except TypeError:
        return False
