"""The Questionnaire, compiled once into an index of its items by linkId, for linear QR walks.

Why: validating a QuestionnaireResponse needs, for every QR item, "which Questionnaire item is
this, at this nesting level, in which position" and, for every enableWhen, "which answers does the
condition look at". Computing that from the raw JSON for each response would make the walk
quadratic; the index answers each question with one dict lookup. It is cached by
`url|version|meta.versionId|meta.lastUpdated` (a stored Questionnaire that is updated in place
gets a new versionId, so a stale index is never used for it).

Spec: R4 questionnaire.html (linkId unique in the whole tree, que-2; nesting "Group properties";
enableWhen.question "nearest question occurrence reachable by tracing first the ancestor axis");
research/validation.md B2 (Q-01..Q-12) and Q-10 (the answers an enableWhen sees are those in the
instance of the nearest common ancestor of source and target, as the HL7 validator does).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "Condition",
    "ItemDef",
    "QuestionnaireIndex",
    "clear_index_cache",
    "option_key",
    "questionnaire_index",
]

EXT_MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
EXT_MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
EXT_MIME_TYPE = "http://hl7.org/fhir/StructureDefinition/mimeType"
EXT_MAX_SIZE = "http://hl7.org/fhir/StructureDefinition/maxSize"
EXT_UNIT_OPTION = "http://hl7.org/fhir/StructureDefinition/questionnaire-unitOption"

_CACHE_SIZE = 256
_cache: OrderedDict[str, QuestionnaireIndex] = OrderedDict()


@dataclass(frozen=True, slots=True)
class Condition:
    """One `Questionnaire.item.enableWhen`, resolved against the tree.

    `scope` is the linkId of the nearest common ancestor-or-self of the source question and the
    item carrying the condition (None: the Questionnaire root): the answers the condition sees are
    those inside the QR instance of that item (research/validation.md Q-10). `source_chain` are
    the linkIds from just below `scope` down to the source question, whose own enablement decides
    whether the source's answers count at all (an answered but disabled question "behaves as
    though [it] weren't actually present", R4 Questionnaire.item.enableWhen).
    """

    question: str
    operator: str
    answer_key: str | None  # "answerBoolean", "answerCoding", ...; None when the definition has none
    answer: Any
    scope: str | None = None
    source_chain: tuple[str, ...] = ()


@dataclass(slots=True)
class ItemDef:
    """One Questionnaire item with what the QR walk needs, precomputed."""

    link_id: str
    type: str
    text: str | None
    required: bool
    repeats: bool
    max_length: int | None
    options: frozenset[tuple]  # option_key() of every answerOption
    option_keys: frozenset[str]  # the value[x] names the options use ("valueCoding", ...)
    value_set: str | None
    value_set_resource: dict | None  # the contained ValueSet when answerValueSet is "#id"
    enable_when: tuple[Condition, ...]
    enable_behavior: str | None
    ancestors: tuple[str, ...]  # linkIds from the root down to the parent
    min_value: tuple[str, Any] | None = None  # (value key, value) of the minValue extension
    max_value: tuple[str, Any] | None = None
    mime_types: tuple[str, ...] = ()
    max_size: Decimal | None = None
    unit_options: frozenset[tuple[str | None, str | None]] = frozenset()
    children: tuple[ItemDef, ...] = ()
    positions: dict[str, int] = field(default_factory=dict)  # child linkId -> index in children


@dataclass(slots=True)
class QuestionnaireIndex:
    """Every item of one Questionnaire by linkId, plus the root level as a pseudo-item."""

    url: str | None
    version: str | None
    id: str | None
    items: dict[str, ItemDef]
    roots: tuple[ItemDef, ...]
    positions: dict[str, int]  # root-level linkId -> index in roots
    duplicates: tuple[str, ...]  # linkIds defined more than once (que-2): validation cannot be trusted

    @property
    def label(self) -> str:
        """How diagnostics name the Questionnaire: its canonical `url|version`."""
        if self.url and self.version:
            return f"{self.url}|{self.version}"
        return self.url or (f"#{self.id}" if self.id else "(unidentified Questionnaire)")


def questionnaire_index(questionnaire: dict) -> QuestionnaireIndex:
    """The (cached) index of a Questionnaire; built once per url|version|versionId|lastUpdated.

    Questionnaires without a url are indexed on every call (they have no stable identity)."""
    key = _cache_key(questionnaire)
    if key is None:
        return _build(questionnaire)
    index = _cache.get(key)
    if index is None:
        index = _build(questionnaire)
        _cache[key] = index
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    return index


def clear_index_cache() -> None:
    """Forget every cached index (tests; a Questionnaire deleted from the store)."""
    _cache.clear()


def option_key(value_key: str, value: Any) -> tuple | None:
    """A hashable identity for an answerOption value or an answer value, so option membership is one
    set lookup. Codings are identified by system + code, display ignored (research/validation.md
    B-07: a Coding without system does not match an option with one); other types by value."""
    if value_key == "valueCoding":
        if type(value) is not dict or not isinstance(value.get("code"), str):
            return None
        return ("valueCoding", value.get("system"), value["code"])
    if value_key == "valueReference":
        if type(value) is not dict:
            return None
        return ("valueReference", value.get("reference"))
    if value_key in ("valueInteger", "valueDate", "valueTime", "valueString"):
        if type(value) is bool:
            return None
        return (value_key, value)
    return None


def _cache_key(questionnaire: dict) -> str | None:
    url = questionnaire.get("url")
    if not isinstance(url, str):
        return None
    meta = questionnaire.get("meta") if type(questionnaire.get("meta")) is dict else {}
    return "|".join(str(part) for part in (url, questionnaire.get("version"), meta.get("versionId"), meta.get("lastUpdated")))


def _build(questionnaire: dict) -> QuestionnaireIndex:
    items: dict[str, ItemDef] = {}
    duplicates: list[str] = []
    contained = {
        r["id"]: r
        for r in _list(questionnaire.get("contained"))
        if type(r) is dict and r.get("resourceType") == "ValueSet" and isinstance(r.get("id"), str)
    }
    roots = _build_level(_list(questionnaire.get("item")), (), items, duplicates, contained)
    index = QuestionnaireIndex(
        url=questionnaire.get("url") if isinstance(questionnaire.get("url"), str) else None,
        version=questionnaire.get("version") if isinstance(questionnaire.get("version"), str) else None,
        id=questionnaire.get("id") if isinstance(questionnaire.get("id"), str) else None,
        items=items,
        roots=roots,
        positions=_positions(roots),
        duplicates=tuple(duplicates),
    )
    for item in items.values():
        if item.enable_when:
            item.enable_when = tuple(_resolve(condition, item, items) for condition in item.enable_when)
    return index


def _build_level(
    raw_items: list,
    ancestors: tuple[str, ...],
    items: dict[str, ItemDef],
    duplicates: list[str],
    contained: dict[str, dict],
) -> tuple[ItemDef, ...]:
    level: list[ItemDef] = []
    for raw in raw_items:
        if type(raw) is not dict or not isinstance(raw.get("linkId"), str):
            continue
        item = _item(raw, ancestors, contained)
        if item.link_id in items:
            duplicates.append(item.link_id)
        else:
            items[item.link_id] = item
        item.children = _build_level(_list(raw.get("item")), ancestors + (item.link_id,), items, duplicates, contained)
        item.positions = _positions(item.children)
        level.append(item)
    return tuple(level)


def _positions(level: tuple[ItemDef, ...]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for position, item in enumerate(level):
        positions.setdefault(item.link_id, position)
    return positions


def _item(raw: dict, ancestors: tuple[str, ...], contained: dict[str, dict]) -> ItemDef:
    options: set[tuple] = set()
    option_keys: set[str] = set()
    for option in _list(raw.get("answerOption")):
        for key, value in (option.items() if type(option) is dict else ()):
            if key.startswith("value"):
                option_keys.add(key)
                identity = option_key(key, value)
                if identity is not None:
                    options.add(identity)
    extensions = _extensions(raw)
    max_length = raw.get("maxLength")
    value_set = raw.get("answerValueSet") if isinstance(raw.get("answerValueSet"), str) else None
    return ItemDef(
        link_id=raw["linkId"],
        type=raw.get("type") if isinstance(raw.get("type"), str) else "",
        text=raw.get("text") if isinstance(raw.get("text"), str) else None,
        required=raw.get("required") is True,
        repeats=raw.get("repeats") is True,
        max_length=max_length if type(max_length) is int else None,
        options=frozenset(options),
        option_keys=frozenset(option_keys),
        value_set=value_set,
        value_set_resource=contained.get(value_set[1:]) if value_set and value_set.startswith("#") else None,
        enable_when=tuple(_condition(c) for c in _list(raw.get("enableWhen")) if type(c) is dict),
        enable_behavior=raw.get("enableBehavior") if isinstance(raw.get("enableBehavior"), str) else None,
        ancestors=ancestors,
        min_value=_first_value(extensions.get(EXT_MIN_VALUE)),
        max_value=_first_value(extensions.get(EXT_MAX_VALUE)),
        mime_types=tuple(e["valueCode"] for e in extensions.get(EXT_MIME_TYPE, ()) if isinstance(e.get("valueCode"), str)),
        max_size=_max_size(extensions.get(EXT_MAX_SIZE)),
        unit_options=frozenset(
            (e["valueCoding"].get("system"), e["valueCoding"].get("code"))
            for e in extensions.get(EXT_UNIT_OPTION, ())
            if type(e.get("valueCoding")) is dict
        ),
    )


def _condition(raw: dict) -> Condition:
    answer_key = next((k for k in raw if k.startswith("answer")), None)
    return Condition(
        question=raw.get("question") if isinstance(raw.get("question"), str) else "",
        operator=raw.get("operator") if isinstance(raw.get("operator"), str) else "",
        answer_key=answer_key,
        answer=raw.get(answer_key) if answer_key else None,
    )


def _resolve(condition: Condition, target: ItemDef, items: dict[str, ItemDef]) -> Condition:
    """Fix the scope (nearest common ancestor-or-self of source and target) and the chain of items
    between that scope and the source, once, at index time."""
    source = items.get(condition.question)
    if source is None:
        return condition
    source_path = source.ancestors + (source.link_id,)
    target_path = target.ancestors + (target.link_id,)
    common = 0
    for a, b in zip(source_path, target_path):
        if a != b:
            break
        common += 1
    if source.link_id == target.link_id:  # self-reference (an invalid definition): look from the parent
        common = len(target.ancestors)
    scope = source_path[common - 1] if common else None
    return Condition(
        question=condition.question,
        operator=condition.operator,
        answer_key=condition.answer_key,
        answer=condition.answer,
        scope=scope,
        source_chain=source_path[common:],
    )


def _extensions(raw: dict) -> dict[str, list[dict]]:
    by_url: dict[str, list[dict]] = {}
    for extension in _list(raw.get("extension")):
        if type(extension) is dict and isinstance(extension.get("url"), str):
            by_url.setdefault(extension["url"], []).append(extension)
    return by_url


def _first_value(extensions: list[dict] | None) -> tuple[str, Any] | None:
    for extension in extensions or ():
        for key, value in extension.items():
            if key.startswith("value"):
                return key, value
    return None


def _max_size(extensions: list[dict] | None) -> Decimal | None:
    value = _first_value(extensions)
    if value is None or type(value[1]) not in (int, float):
        return None
    return Decimal(str(value[1]))


def _list(value: Any) -> list:
    return value if type(value) is list else []
