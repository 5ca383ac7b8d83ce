"""The walk: a QuestionnaireResponse against its Questionnaire, level by level.

Algorithm (research/validation.md B4.2, the HL7 validator's, with the deviations B4.3 and B6 ask
for). For each list of QR items and the Questionnaire items at the same level:

1. every QR item's linkId must be defined at this level (else `qr-linkid-unknown`, or
   `qr-linkid-misplaced` when it is defined elsewhere in the tree) and the QR items must follow the
   Questionnaire's order (`qr-order`);
2. for each Questionnaire item: if it is disabled (enable_when.py) its QR items must carry no
   answers and no child items (`qr-disabled-answered`) and nothing below it is checked; if it is
   enabled and required and has no QR item, `qr-required` is reported on the parent element;
   several QR items with one linkId are allowed only for repeating groups (`qr-repeats`, or `qrs-2`
   for a repeating question split over items, which must instead carry several answers);
3. each QR item: `text`, if present, equals the Questionnaire's (`qr-text-mismatch`, Q-13);
   display items carry nothing (`qr-display-answered`); groups carry items, never answers
   (`qr-group-answer`); questions carry answers and keep children under `answer.item`
   (`qr-nested-item`, qrs-1 for both on one item); more than one answer only when `repeats`
   (`qr-repeats`); each answer value is checked by answers.py; a required item without an answer
   (a required group without any answer below it, SDC behavior.html) is `qr-required`.

"Required" and "answered although disabled" bind only a `completed` or `amended` response; for
other statuses they are warnings (B4.1, questionnaireresponse.html "in-progress" may be partial).

Cost: one pass over the response; per item a few dict lookups (the Questionnaire is indexed once
and cached, items.py); enableWhen conditions read answers collected once per scope instance.
"""

from __future__ import annotations

from typing import Any

from fhir_server.validation.issues import Issue
from fhir_server.validation.ports import Terminology
from fhir_server.validation.questionnaire.answers import check_answer
from fhir_server.validation.questionnaire.compare import answer_value
from fhir_server.validation.questionnaire.enable_when import EnableContext, Frame
from fhir_server.validation.questionnaire.items import ItemDef, QuestionnaireIndex, questionnaire_index
from fhir_server.validation.questionnaire.report import Reporter, shown_link_id

__all__ = ["validate_response"]

ROOT = "QuestionnaireResponse"
STRICT_STATUSES = frozenset(("completed", "amended"))


def validate_response(response: dict, questionnaire: dict, terminology: Terminology) -> list[Issue]:
    """Every issue of `response` (a QuestionnaireResponse, parsed JSON) against `questionnaire`.

    The caller has resolved `response["questionnaire"]` to `questionnaire`; a response that claims
    another canonical is reported (`qr-questionnaire-mismatch`) and not walked."""
    index = questionnaire_index(questionnaire) if type(questionnaire) is dict else None
    reporter = Reporter(index.label if index else "(none)", response.get("status") in STRICT_STATUSES if type(response) is dict else False)
    if type(response) is not dict or response.get("resourceType") != "QuestionnaireResponse":
        reporter.error("qr-resource-type", "structure", ROOT, "Not a QuestionnaireResponse")
        return reporter.issues
    if index is None or questionnaire.get("resourceType") != "Questionnaire":
        reporter.error("qr-questionnaire-mismatch", "invalid", f"{ROOT}.questionnaire", "The resource validated against is not a Questionnaire")
        return reporter.issues
    if not _claims(response, index, reporter):
        return reporter.issues
    if index.duplicates:
        reporter.error(
            "que-2",
            "invalid",
            f"{ROOT}.questionnaire",
            f"The Questionnaire defines linkId(s) {', '.join(shown_link_id(d) for d in index.duplicates)} more than once, "
            "so answers cannot be matched to items",
        )
        return reporter.issues
    _Walk(index, reporter, terminology).level(index.roots, index.positions, response.get("item"), ROOT, [Frame(None, response)])
    return reporter.issues


def _claims(response: dict, index: QuestionnaireIndex, reporter: Reporter) -> bool:
    """`QuestionnaireResponse.questionnaire` must name the Questionnaire validated against: its url
    (and its version when the canonical pins one, `url|version`), or `#id` for a contained one."""
    claimed = response.get("questionnaire")
    if not isinstance(claimed, str):
        reporter.warning(
            "qr-questionnaire-mismatch",
            "required",
            f"{ROOT}.questionnaire",
            "The response does not say which Questionnaire it answers; validated against the one supplied",
        )
        return True
    if claimed.startswith("#"):
        matches = index.id is not None and claimed[1:] == index.id
    else:
        url, _, version = claimed.partition("|")
        matches = url == index.url and (not version or version == index.version)
    if not matches:
        reporter.error(
            "qr-questionnaire-mismatch",
            "invalid",
            f"{ROOT}.questionnaire",
            "The response claims a different Questionnaire than the one it is validated against",
        )
    return matches


class _Walk:
    __slots__ = ("index", "reporter", "terminology", "enable")

    def __init__(self, index: QuestionnaireIndex, reporter: Reporter, terminology: Terminology) -> None:
        self.index = index
        self.reporter = reporter
        self.terminology = terminology
        self.enable = EnableContext(index)

    def level(self, defs: tuple[ItemDef, ...], positions: dict[str, int], raw_items: Any, path: str, stack: list[Frame]) -> None:
        """QR items `raw_items` (the `item` list at `path`) against the Questionnaire items `defs`."""
        items = raw_items if type(raw_items) is list else []
        grouped: list[list[tuple[int, dict]]] = [[] for _ in defs]
        last = -1
        for i, qr_item in enumerate(items):
            if type(qr_item) is not dict:
                continue
            link_id = qr_item.get("linkId")
            here = f"{path}.item[{i}]"
            position = positions.get(link_id) if isinstance(link_id, str) else None
            if position is None:
                self._unknown(link_id, here)
                continue
            if position < last:
                self.reporter.error(
                    "qr-order", "structure", here, f"Item '{link_id}' is out of order: the Questionnaire puts it before the item preceding it"
                )
            else:
                last = position
            grouped[position].append((i, qr_item))
        for item, occurrences in zip(defs, grouped):
            self._item_level(item, occurrences, path, stack)

    def _unknown(self, link_id: Any, here: str) -> None:
        if isinstance(link_id, str) and link_id in self.index.items:
            self.reporter.error(
                "qr-linkid-misplaced",
                "structure",
                here,
                f"Item {shown_link_id(link_id)} is defined elsewhere in the Questionnaire, not at this level",
            )
        elif not isinstance(link_id, str):
            self.reporter.error("qr-linkid-unknown", "required", here, "Item has no linkId, so it cannot be matched to the Questionnaire")
        else:
            self.reporter.error("qr-linkid-unknown", "not-found", here, f"LinkId {shown_link_id(link_id)} is not defined in the Questionnaire")

    def _item_level(self, item: ItemDef, occurrences: list[tuple[int, dict]], path: str, stack: list[Frame]) -> None:
        """Step 2 of the module docstring for one Questionnaire item at this level."""
        enabled = self.enable.enabled(item, stack)
        if not enabled:
            for i, qr_item in occurrences:
                if _has_content(qr_item):
                    self.reporter.completion(
                        "qr-disabled-answered",
                        "invalid",
                        f"{path}.item[{i}]",
                        f"Item '{item.link_id}' has answers or items although its enableWhen conditions disable it",
                    )
            return
        if not occurrences:
            if item.required:
                self.reporter.completion("qr-required", "required", path, f"Required item '{item.link_id}' has no answer")
            return
        if len(occurrences) > 1 and not (item.repeats and item.type == "group"):
            rule = "qrs-2" if item.repeats else "qr-repeats"
            why = (
                "a repeating question carries its answers in one item"
                if item.repeats
                else "the item does not repeat"
            )
            for i, _ in occurrences[1:]:
                self.reporter.error(rule, "structure", f"{path}.item[{i}]", f"Item '{item.link_id}' appears more than once: {why}")
        for i, qr_item in occurrences:
            self._item(item, qr_item, f"{path}.item[{i}]", stack)

    def _item(self, item: ItemDef, qr_item: dict, here: str, stack: list[Frame]) -> None:
        """Step 3 of the module docstring: one QR item of an enabled Questionnaire item."""
        reporter = self.reporter
        text = qr_item.get("text")
        if text is not None and text != item.text:
            reporter.error("qr-text-mismatch", "value", f"{here}.text", f"The text of item '{item.link_id}' differs from the Questionnaire's")
        answers = qr_item.get("answer")
        answers = answers if type(answers) is list else []
        children = qr_item.get("item")
        children = children if type(children) is list else []
        if item.type == "display":
            if answers or children:
                reporter.error("qr-display-answered", "structure", here, f"Display item '{item.link_id}' cannot have answers or items")
            return
        frame_stack = stack + [Frame(item, qr_item)]
        if item.type == "group":
            if answers:
                reporter.error("qr-group-answer", "structure", f"{here}.answer[0]", f"Group item '{item.link_id}' cannot have answers (its content goes in item)")
            if item.required and not _any_answer(children):
                reporter.completion("qr-required", "required", here, f"Required group '{item.link_id}' has no answered item")
            self.level(item.children, item.positions, children, here, frame_stack)
            return
        if answers and children:
            reporter.error("qrs-1", "invariant", here, f"Item '{item.link_id}' has both answer and item (qrs-1): nested items go in answer.item")
        elif children:
            reporter.error("qr-nested-item", "structure", f"{here}.item[0]", f"Question '{item.link_id}' keeps nested items under answer.item, not item")
        if not answers:
            if item.required:
                reporter.completion("qr-required", "required", here, f"Required item '{item.link_id}' has no answer")
            return
        if len(answers) > 1 and not item.repeats:
            reporter.error("qr-repeats", "structure", f"{here}.answer[1]", f"Item '{item.link_id}' does not repeat but has {len(answers)} answers")
        for j, answer in enumerate(answers):
            if type(answer) is not dict:
                continue
            at = f"{here}.answer[{j}]"
            value = answer_value(answer)
            if value is not None:
                check_answer(item, value[0], value[1], at, reporter, self.terminology)
            elif item.required and "item" not in answer:
                reporter.completion("qr-required", "required", at, f"Answer to required item '{item.link_id}' has no value")
            nested = answer.get("item")
            if nested is not None or item.children:
                self.level(item.children, item.positions, nested, at, frame_stack)


def _has_content(qr_item: dict) -> bool:
    return bool(qr_item.get("answer")) or bool(qr_item.get("item"))


def _any_answer(items: list) -> bool:
    """Whether any QR item in the list, at any depth, has an answer (SDC: a required group needs at
    least one answered descendant)."""
    for qr_item in items:
        if type(qr_item) is not dict:
            continue
        answers = qr_item.get("answer")
        if type(answers) is list and answers:
            return True
        if type(qr_item.get("item")) is list and _any_answer(qr_item["item"]):
            return True
    return False
