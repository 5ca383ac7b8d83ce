"""Checks on a Questionnaire itself: the R4 que-* invariants and the enableWhen rules the HL7
validator adds, so a Questionnaire that the QR walk cannot rely on is caught when it is written.

Spec: R4 questionnaire.html constraints que-0..que-13, evaluated as research/validation.md B3
says (que-7 as `answer is boolean`, que-12 as "two or more" conditions need enableBehavior, que-5
per its expression, not its human text); B3 "Java's Questionnaire-level business rules": an
enableWhen whose question is missing, the item itself or one of its descendants is an error, one
that points at a later item is a warning (B-02). Added here: the answer[x] of an enableWhen must be
of a type the source question can have (`que-enablewhen-type`), and answerOption values must
match the item type (R4 answerOption.value[x] "must agree with the item.type",
`que-option-type`).
"""

from __future__ import annotations

import re
from typing import Any

from fhir_server.validation.issues import Issue

__all__ = ["check_questionnaire"]

_NAME = re.compile(r"[A-Z][A-Za-z0-9_]{0,254}")
_OPTION_TYPES = frozenset(("choice", "open-choice", "decimal", "integer", "date", "dateTime", "time", "string", "quantity"))
_MAX_LENGTH_TYPES = frozenset(("boolean", "decimal", "integer", "string", "text", "url", "open-choice"))
# item.type -> the answerOption value[x] names that agree with it (choice types take any).
_OPTION_VALUES = {
    "integer": frozenset(("valueInteger",)),
    "date": frozenset(("valueDate",)),
    "time": frozenset(("valueTime",)),
    "string": frozenset(("valueString",)),
}
# item.type of the source question -> the enableWhen answer[x] that can match its answers.
_CONDITION_VALUES = {
    "boolean": frozenset(("answerBoolean",)),
    "decimal": frozenset(("answerDecimal", "answerInteger")),
    "integer": frozenset(("answerInteger", "answerDecimal")),
    "date": frozenset(("answerDate", "answerDateTime")),
    "dateTime": frozenset(("answerDateTime", "answerDate")),
    "time": frozenset(("answerTime",)),
    "string": frozenset(("answerString",)),
    "text": frozenset(("answerString",)),
    "url": frozenset(("answerString",)),
    "choice": frozenset(("answerCoding", "answerString", "answerInteger", "answerDate", "answerTime")),
    "open-choice": frozenset(("answerCoding", "answerString", "answerInteger", "answerDate", "answerTime")),
    "reference": frozenset(("answerReference",)),
    "quantity": frozenset(("answerQuantity",)),
}


def check_questionnaire(questionnaire: dict) -> list[Issue]:
    """The que-* and enableWhen issues of a Questionnaire (parsed JSON)."""
    issues: list[Issue] = []
    name = questionnaire.get("name")
    if isinstance(name, str) and not _NAME.fullmatch(name):
        issues.append(Issue("warning", "invariant", "Questionnaire.name", "The name should be usable as a computable identifier", "que-0"))
    flat: list[tuple[dict, str, tuple[str, ...]]] = []  # (item, path, ancestor linkIds)
    _flatten(questionnaire.get("item"), "Questionnaire", (), flat)
    order: dict[str, int] = {}
    types: dict[str, str] = {}
    lineage: dict[str, tuple[str, ...]] = {}
    for position, (item, path, ancestors) in enumerate(flat):
        link_id = item.get("linkId")
        if not isinstance(link_id, str):
            continue
        if link_id in order:
            issues.append(Issue("error", "invariant", f"{path}.linkId", f"linkId '{link_id}' is used more than once", "que-2"))
        else:
            order[link_id] = position
            types[link_id] = item.get("type", "")
            lineage[link_id] = ancestors
    for position, (item, path, _) in enumerate(flat):
        _item_invariants(item, path, issues)
        _enable_when(item, path, position, order, types, lineage, issues)
    return issues


def _flatten(items: Any, path: str, ancestors: tuple[str, ...], into: list) -> None:
    if type(items) is not list:
        return
    for i, item in enumerate(items):
        if type(item) is not dict:
            continue
        here = f"{path}.item[{i}]"
        into.append((item, here, ancestors))
        _flatten(item.get("item"), here, ancestors + (str(item.get("linkId")),), into)


def _item_invariants(item: dict, path: str, issues: list[Issue]) -> None:
    kind = item.get("type")

    def fail(rule: str, message: str) -> None:
        issues.append(Issue("error", "invariant", path, f"Item '{item.get('linkId')}': {message}", rule))

    if kind == "group" and not item.get("item"):
        fail("que-1", "a group must have items")
    if kind == "display":
        if item.get("item"):
            fail("que-1", "a display item cannot have items")
        if item.get("code"):
            fail("que-3", "a display item cannot have a code")
        if "required" in item or "repeats" in item:
            fail("que-6", "a display item cannot be required or repeat")
        if "readOnly" in item:
            fail("que-9", "a display item cannot be readOnly")
    has_options, has_value_set = bool(item.get("answerOption")), "answerValueSet" in item
    if has_options and has_value_set:
        fail("que-4", "answerOption and answerValueSet cannot both be present")
    if (has_options or has_value_set) and kind not in _OPTION_TYPES:
        fail("que-5", f"items of type {kind} cannot have answerOption or answerValueSet")
    if kind in ("group", "display") and item.get("initial"):
        fail("que-8", "group and display items cannot have initial values")
    if "maxLength" in item and kind not in _MAX_LENGTH_TYPES:
        fail("que-10", f"items of type {kind} cannot have maxLength")
    if has_options and item.get("initial"):
        fail("que-11", "use answerOption.initialSelected instead of initial")
    conditions = item.get("enableWhen") if type(item.get("enableWhen")) is list else []
    if len(conditions) >= 2 and "enableBehavior" not in item:
        fail("que-12", "two or more enableWhen conditions need enableBehavior")
    if item.get("repeats") is not True and type(item.get("initial")) is list and len(item["initial"]) > 1:
        fail("que-13", "only a repeating item can have several initial values")
    allowed = _OPTION_VALUES.get(kind)
    if allowed and has_options:
        for option in item["answerOption"]:
            keys = {k for k in option if k.startswith("value")} if type(option) is dict else set()
            if not keys <= allowed:
                fail("que-option-type", f"answerOption values of an item of type {kind} must be {', '.join(sorted(allowed))}")
                break


def _enable_when(
    item: dict,
    path: str,
    position: int,
    order: dict[str, int],
    types: dict[str, str],
    lineage: dict[str, tuple[str, ...]],
    issues: list[Issue],
) -> None:
    conditions = item.get("enableWhen")
    if type(conditions) is not list:
        return
    link_id = item.get("linkId")
    for j, condition in enumerate(conditions):
        if type(condition) is not dict:
            continue
        here = f"{path}.enableWhen[{j}]"
        answer_keys = [k for k in condition if k.startswith("answer")]
        if condition.get("operator") == "exists" and answer_keys != ["answerBoolean"]:
            issues.append(Issue("error", "invariant", here, f"Item '{link_id}': operator exists needs answerBoolean", "que-7"))
        question = condition.get("question")
        if question == link_id:
            issues.append(Issue("error", "invariant", here, f"Item '{link_id}': enableWhen cannot refer to the item itself", "que-enablewhen-target"))
            continue
        if question not in order:
            issues.append(Issue("error", "invariant", here, f"Item '{link_id}': enableWhen refers to an undefined linkId", "que-enablewhen-target"))
            continue
        if link_id in lineage[question]:
            issues.append(Issue("error", "invariant", here, f"Item '{link_id}': enableWhen cannot refer to a descendant", "que-enablewhen-target"))
            continue
        if order[question] > position:
            issues.append(
                Issue("warning", "business-rule", here, f"Item '{link_id}': enableWhen refers to a later item '{question}'", "que-enablewhen-target")
            )
        source_type = types.get(question, "")
        allowed = _CONDITION_VALUES.get(source_type)
        if condition.get("operator") != "exists" and allowed is not None and answer_keys and answer_keys[0] not in allowed:
            issues.append(
                Issue(
                    "error",
                    "invariant",
                    here,
                    f"Item '{link_id}': {answer_keys[0]} can never match an answer to '{question}' (type {source_type})",
                    "que-enablewhen-type",
                )
            )

