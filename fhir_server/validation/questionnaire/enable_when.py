"""Whether a Questionnaire item is enabled, for one place in one QuestionnaireResponse.

Why here: the walk asks this for every item it meets and for every required item it misses, so
each question must be cheap. The answers a condition looks at are collected once per QR instance
(the QR item that is the condition's scope, see items.Condition) and kept in a dict by linkId, so
evaluating a condition is a few dict lookups and the whole walk stays linear in the size of the
response (times the nesting depth).

Semantics (R4 questionnaire.html Questionnaire.item.enableWhen / enableBehavior; research
note Q-07..Q-10):
- `exists`: whether the source has an answer equals answerBoolean;
- `=`: at least one answer equals; `!=`: *no* answer equals, so it is true when the source is
  unanswered (the clarified R4 text; the Java validator differs, see Q-08);
- `>` `<` `>=` `<=`: at least one answer compares so (numbers, dates, times, strings, Quantity);
- one condition decides alone; several combine by enableBehavior `all` / `any`; several without
  enableBehavior break que-12 and are treated as enabled (as the Java validator does), so a broken
  definition never produces "answered but disabled" errors;
- a disabled item disables its descendants (the walk does not descend into disabled items), and a
  disabled source question counts as unanswered (enableWhen is a modifier: the item "behaves as
  though [it] weren't actually present");
- an enableWhen cycle (A depends on B depends on A) is cut by treating the item being evaluated
  again as enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.validation.questionnaire.compare import answer_value, equal, order
from fhir_server.validation.questionnaire.items import Condition, ItemDef, QuestionnaireIndex

__all__ = ["EnableContext", "Frame", "evaluate"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One level of the walk: the Questionnaire item (None at the root) and the QR node holding its
    content (the QuestionnaireResponse itself at the root, else the QR item)."""

    item: ItemDef | None
    node: dict


class EnableContext:
    """Enablement for one QuestionnaireResponse against one Questionnaire index."""

    __slots__ = ("_index", "_answers", "_memo", "_visiting")

    def __init__(self, index: QuestionnaireIndex) -> None:
        self._index = index
        self._answers: dict[int, dict[str, list[dict]]] = {}
        self._memo: dict[tuple[str, int], bool] = {}
        self._visiting: set[tuple[str, int]] = set()

    def enabled(self, item: ItemDef, stack: list[Frame]) -> bool:
        """Whether `item`, a child of the innermost frame of `stack`, is enabled there."""
        conditions = item.enable_when
        if not conditions:
            return True
        if len(conditions) == 1:
            return self._holds(conditions[0], stack)
        if item.enable_behavior == "all":
            return all(self._holds(c, stack) for c in conditions)
        if item.enable_behavior == "any":
            return any(self._holds(c, stack) for c in conditions)
        return True

    def _holds(self, condition: Condition, stack: list[Frame]) -> bool:
        if condition.answer_key is None or condition.question not in self._index.items:
            return False
        depth = _frame_depth(condition.scope, stack)
        frame = stack[depth]
        answers = self._answers_in(frame.node).get(condition.question, ())
        if answers and condition.source_chain and not self._source_enabled(condition.source_chain, stack[: depth + 1]):
            answers = ()
        return evaluate(condition.operator, condition.answer_key, condition.answer, answers)

    def _source_enabled(self, chain: tuple[str, ...], stack: list[Frame]) -> bool:
        """Whether every item on the chain from the scope down to the source question is enabled.

        The chain's items lie below the innermost frame, in instances the walk has not located
        (possibly several, in repeating groups): they are evaluated against the scope instance as a
        whole, which is exact for non-repeating content."""
        node_id = id(stack[-1].node)
        for link_id in chain:
            item = self._index.items.get(link_id)
            if item is None or not item.enable_when:
                continue
            key = (link_id, node_id)
            known = self._memo.get(key)
            if known is None:
                if key in self._visiting:
                    continue  # a cycle: treat as enabled (module docstring)
                self._visiting.add(key)
                try:
                    known = self.enabled(item, stack)
                finally:
                    self._visiting.discard(key)
                self._memo[key] = known
            if not known:
                return False
        return True

    def _answers_in(self, node: dict) -> dict[str, list[dict]]:
        """Every answer inside a QR node (its own and its descendants'), by linkId; built once."""
        cached = self._answers.get(id(node))
        if cached is None:
            cached = {}
            if node.get("resourceType") != "QuestionnaireResponse":
                _collect_item(node, cached)
            else:
                for child in _list(node.get("item")):
                    _collect_item(child, cached)
            self._answers[id(node)] = cached
        return cached


def evaluate(operator: str, answer_key: str, expected: Any, answers: Any) -> bool:
    """One enableWhen condition against the answers of its source question (module docstring)."""
    if operator == "exists":
        present = any(answer_value(a) is not None for a in answers)
        return present is expected if type(expected) is bool else False
    values = [v for v in (answer_value(a) for a in answers) if v is not None]
    if operator == "=":
        return any(equal(answer_key, expected, k, v) is True for k, v in values)
    if operator == "!=":
        return not any(equal(answer_key, expected, k, v) is True for k, v in values)
    test = _ORDERED.get(operator)
    if test is None:
        return False
    for key, value in values:
        result = order(answer_key, expected, key, value)
        if result is not None and test(result):
            return True
    return False


_ORDERED = {
    ">": lambda r: r > 0,
    "<": lambda r: r < 0,
    ">=": lambda r: r >= 0,
    "<=": lambda r: r <= 0,
}


def _frame_depth(scope: str | None, stack: list[Frame]) -> int:
    """The index in `stack` of the frame of the condition's scope; the root when the scope is None,
    the innermost frame when the scope is not on the stack (evaluating a source chain)."""
    if scope is None:
        return 0
    for depth in range(len(stack) - 1, 0, -1):
        item = stack[depth].item
        if item is not None and item.link_id == scope:
            return depth
    return len(stack) - 1


def _collect_item(item: Any, into: dict[str, list[dict]]) -> None:
    if type(item) is not dict:
        return
    link_id = item.get("linkId")
    answers = _list(item.get("answer"))
    if answers and isinstance(link_id, str):
        into.setdefault(link_id, []).extend(a for a in answers if type(a) is dict)
    for answer in answers:
        if type(answer) is dict:
            for child in _list(answer.get("item")):
                _collect_item(child, into)
    for child in _list(item.get("item")):
        _collect_item(child, into)


def _list(value: Any) -> list:
    return value if type(value) is list else []
