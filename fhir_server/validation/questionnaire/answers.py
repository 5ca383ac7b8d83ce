"""Checks on one QR answer value against its Questionnaire item: type, options, value set, length,
range, units, attachment consistency.

Spec: R4 QuestionnaireResponse.item.answer.value[x] "Must match the datatype specified by
Questionnaire.item.type" with the item-type table of research/validation.md B1 (url answers are
valueUri; choice answers are Codings, or the answerOption's own type when the options are
integers, dates, times or strings; open-choice adds free-text valueString); B4.3 for the per-type
checks and their severities; B5 for the core extensions minValue/maxValue, mimeType, maxSize and
questionnaire-unitOption. Diagnostics name the item and the rule, never the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from decimal import Decimal
from typing import Any

from fhir_server.validation.ports import Terminology
from fhir_server.validation.questionnaire.compare import order
from fhir_server.validation.questionnaire.items import ItemDef, option_key
from fhir_server.validation.questionnaire.report import Reporter

__all__ = ["check_answer", "TYPE_VALUES"]

# item.type -> the answer value[x] names the R4 item-type definition allows (B1).
TYPE_VALUES: dict[str, frozenset[str]] = {
    "boolean": frozenset(("valueBoolean",)),
    "decimal": frozenset(("valueDecimal",)),
    "integer": frozenset(("valueInteger",)),
    "date": frozenset(("valueDate",)),
    "dateTime": frozenset(("valueDateTime",)),
    "time": frozenset(("valueTime",)),
    "string": frozenset(("valueString",)),
    "text": frozenset(("valueString",)),
    "url": frozenset(("valueUri",)),
    "choice": frozenset(("valueCoding",)),
    "open-choice": frozenset(("valueCoding", "valueString")),
    "attachment": frozenset(("valueAttachment",)),
    "reference": frozenset(("valueReference",)),
    "quantity": frozenset(("valueQuantity",)),
}
_CHOICE_TYPES = frozenset(("choice", "open-choice"))
_LENGTH_KEYS = frozenset(("valueString", "valueUri"))
_RANGE_KEYS = frozenset(("valueInteger", "valueDecimal", "valueDate", "valueDateTime"))


def check_answer(
    item: ItemDef,
    key: str,
    value: Any,
    path: str,
    reporter: Reporter,
    terminology: Terminology,
) -> None:
    """Report every problem with one answer value (`key` is its value[x] name) at `path`."""
    allowed = TYPE_VALUES.get(item.type)
    if allowed is None:  # "question" (abstract) or an unknown type: nothing to check against
        return
    if item.type in _CHOICE_TYPES:
        allowed = allowed | item.option_keys
    if key not in allowed:
        reporter.error(
            "qr-answer-type",
            "value",
            path,
            f"Answer to item '{item.link_id}' (type {item.type}) must be {' or '.join(sorted(allowed))}, not {key}",
        )
        return
    free_text = item.type == "open-choice" and key == "valueString"
    if item.options and not free_text:
        _check_option(item, key, value, path, reporter)
    elif item.value_set and not free_text and key in ("valueCoding", "valueString"):
        _check_value_set(item, key, value, path, reporter, terminology)
    if item.max_length is not None and key in _LENGTH_KEYS and isinstance(value, str) and len(value) > item.max_length:
        reporter.error(
            "qr-max-length",
            "value",
            path,
            f"Answer to item '{item.link_id}' is longer than its maxLength of {item.max_length} characters",
        )
    if key in _RANGE_KEYS and (item.min_value or item.max_value):
        _check_range(item, key, value, path, reporter)
    if key == "valueAttachment":
        _check_attachment(item, value, path, reporter)
    elif key == "valueQuantity" and item.unit_options:
        _check_unit(item, value, path, reporter)


def _check_option(item: ItemDef, key: str, value: Any, path: str, reporter: Reporter) -> None:
    """answerOption membership: Codings by system + code (display ignored), other types by value."""
    identity = option_key(key, value)
    if identity is None or identity not in item.options:
        reporter.error(
            "qr-answer-option",
            "code-invalid",
            path,
            f"Answer to item '{item.link_id}' is not one of the item's answerOptions",
        )


def _check_value_set(item: ItemDef, key: str, value: Any, path: str, reporter: Reporter, terminology: Terminology) -> None:
    """answerValueSet membership through the terminology port; "unknown" is reported as
    information and the answer accepted (research/validation.md VAL-22, B-08), never a silent pass."""
    if key == "valueCoding":
        system = value.get("system") if type(value) is dict else None
        code = value.get("code") if type(value) is dict else None
    else:
        system, code = None, value
    if not isinstance(code, str):
        reporter.error(
            "qr-answer-valueset",
            "code-invalid",
            path,
            f"Answer to item '{item.link_id}' has no code to check against answerValueSet {item.value_set}",
        )
        return
    system = system if isinstance(system, str) else None
    check_resource = getattr(terminology, "check_resource", None)
    if item.value_set_resource is not None and check_resource is not None:
        membership = check_resource(item.value_set_resource, system, code)  # contained "#id" (LocalTerminology)
    else:
        membership = terminology.check(item.value_set, system, code)
    if membership.status == "not-member":
        reporter.error(
            "qr-answer-valueset",
            "code-invalid",
            path,
            f"Answer to item '{item.link_id}' is not in answerValueSet {item.value_set}",
        )
    elif membership.status == "unknown":
        # the terminology's reason may quote the code; the code is the patient's answer (report.py)
        reason = f": {membership.reason}" if membership.reason and code not in membership.reason else ""
        reporter.information(
            "qr-answer-valueset",
            "informational",
            path,
            f"Membership of the answer to item '{item.link_id}' in answerValueSet {item.value_set} could not be checked{reason}",
        )


def _check_range(item: ItemDef, key: str, value: Any, path: str, reporter: Reporter) -> None:
    """minValue / maxValue, inclusive (B5); values that cannot be compared are not judged."""
    if item.min_value is not None:
        result = order(item.min_value[0], item.min_value[1], key, value)
        if result is not None and result < 0:
            reporter.error("qr-answer-range", "value", path, f"Answer to item '{item.link_id}' is below the item's minValue")
    if item.max_value is not None:
        result = order(item.max_value[0], item.max_value[1], key, value)
        if result is not None and result > 0:
            reporter.error("qr-answer-range", "value", path, f"Answer to item '{item.link_id}' is above the item's maxValue")


def _check_unit(item: ItemDef, value: Any, path: str, reporter: Reporter) -> None:
    """questionnaire-unitOption: a coded unit must be one of the offered units."""
    if type(value) is not dict or value.get("code") is None:
        return
    if (value.get("system"), value.get("code")) not in item.unit_options:
        reporter.error("qr-answer-unit", "code-invalid", path, f"Answer to item '{item.link_id}' uses a unit the item does not offer")


def _check_attachment(item: ItemDef, value: Any, path: str, reporter: Reporter) -> None:
    """Attachment answers (B4.3, B-16): contentType present and allowed by the mimeType extension
    (an allowed `image/` or `image/*` accepts any image type); when inline `data` is present, its
    decoded length and SHA-1 must agree with `size` and `hash` (R4 Attachment.size / .hash) and stay
    within maxSize. Without inline data only the declared `size` is compared with maxSize (the
    referenced Binary is not fetched here)."""
    if type(value) is not dict:
        return
    content_type = value.get("contentType")
    label = f"Attachment answer to item '{item.link_id}'"
    if not isinstance(content_type, str):
        reporter.error("qr-attachment", "required", path, f"{label} has no contentType")
    elif item.mime_types and not any(_mime_allows(allowed, content_type) for allowed in item.mime_types):
        reporter.error(
            "qr-attachment",
            "value",
            path,
            f"{label} has a contentType the item does not allow (allowed: {', '.join(item.mime_types)})",
        )
    size: Decimal | None = None
    if isinstance(value.get("size"), int) and type(value.get("size")) is not bool:
        size = Decimal(value["size"])
    data = value.get("data")
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            reporter.error("qr-attachment", "value", path, f"{label} has data that is not valid base64")
            return
        if size is not None and size != len(raw):
            reporter.error("qr-attachment", "value", path, f"{label} declares a size that differs from its data")
        digest = value.get("hash")
        if isinstance(digest, str) and digest != base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii"):
            reporter.error("qr-attachment", "value", path, f"{label} declares a hash (SHA-1) that differs from its data")
        size = Decimal(len(raw))
    if item.max_size is not None and size is not None and size > item.max_size:
        reporter.error("qr-attachment", "value", path, f"{label} is larger than the item's maxSize of {item.max_size} bytes")


def _mime_allows(allowed: str, content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    allowed = allowed.lower()
    if allowed.endswith("/*"):
        allowed = allowed[:-1]
    return base.startswith(allowed) if allowed.endswith("/") else base == allowed
