"""Merging one differential element into the element it constrains.

The rule per property is the one the reference generators apply (R4 Java
`ProfileUtilities.updateFromDefinition`; validation.md A2.2), with the checks of profiling.html
that make a differential invalid reported instead of silently applied (SNAP-04, 09, 10, 11, 12).
Everything here works on an element the caller owns (a private copy).
"""

from __future__ import annotations

from .errors import Problems
from .tree import clone
from .typeinfo import BINDABLE_TYPES, derives_from, type_code, type_codes, value_type

__all__ = ["apply_differential", "fill_from_base", "extension_doco", "copy_profile_text"]

_TEXT = ("short", "definition", "comment", "requirements", "label")
_STRENGTH = {"example": 0, "preferred": 1, "extensible": 2, "required": 3}
_VALUE_PREFIXES = ("fixed", "pattern")


def _value_keys(element: dict, prefix: str) -> list[str]:
    return [k for k in element if k.startswith(prefix) and k[len(prefix):][:1].isupper()]


def _larger_max(derived: str, base: str) -> bool:
    if base == "*":
        return False
    return derived == "*" or int(derived) > int(base)


def extension_doco(element: dict) -> None:
    """The text of an extension element being profiled is reset: "for an extension, there's no
    point copying across all the underlying definitional stuff" (R4 Java checkExtensionDoco); the
    extension definition's own text is copied over it by `copy_profile_text`."""
    element["short"] = "Extension"
    element["definition"] = "An Extension"
    for key in ("comment", "requirements", "alias", "mapping"):
        element.pop(key, None)


def copy_profile_text(element: dict, profile_root: dict) -> None:
    """Text of an element typed with a profile (an extension slice) comes from that profile's root."""
    for key in ("definition", "short", "comment", "requirements"):
        if key in profile_root:
            element[key] = profile_root[key]
    for key in ("alias", "mapping"):
        element.pop(key, None)
        if key in profile_root:
            element[key] = clone(profile_root[key])


def fill_from_base(template: dict, base: dict) -> None:
    """An element built from a type profile's root (an extension definition, SimpleQuantity) takes
    over what the element being constrained says about its use; R4 Java `overWriteWithCurrent`.
    `condition`, `type`, isSummary/isModifier stay the profile root's: the published R4 snapshots
    show the extension root's `condition: [ele-1]` on extension slices (familymemberhistory-genetic,
    observation-genetics) and SimpleQuantity's on `referenceRange.high` (cholesterol)."""
    for key in ("sliceName", "label", "definition", "short", "comment", "requirements", "min", "max",
                "maxLength", "mustSupport", "binding"):
        if key in base:
            template[key] = clone(base[key])
    for key in ("code", "alias"):
        for item in base.get(key, ()):
            if item not in template.setdefault(key, []):
                template[key].append(clone(item))
    for prefix in ("fixed", "pattern", "minValue", "maxValue"):
        for key in _value_keys(base, prefix):
            template[key] = clone(base[key])
    if "example" in base:
        template["example"] = clone(base["example"])
    keys = {c.get("key") for c in template.get("constraint", ())}
    for constraint in base.get("constraint", ()):
        if constraint.get("key") not in keys:
            template.setdefault("constraint", []).append(clone(constraint))
    urls = {e.get("url") for e in template.get("extension", ())}
    for extension in base.get("extension", ()):
        if extension.get("url") not in urls:
            template.setdefault("extension", []).append(clone(extension))


def apply_differential(
    element: dict,
    diff: dict,
    base: dict,
    *,
    stamp_url: str,
    is_slice: bool,
    at: str,
    problems: Problems,
) -> None:
    """Merge differential element `diff` into `element` (a copy of, or a template standing for,
    base element `base`). `stamp_url` is the url of the profile's base definition: inherited
    constraints without a `source` get it (SNAP-18). `is_slice` exempts the element from the
    rule that min cannot go below the base min (profiling.html "Slice Cardinality")."""
    for constraint in element.get("constraint", ()):
        constraint.setdefault("source", stamp_url)

    for key in _TEXT:
        if key in diff:
            text = diff[key]
            if isinstance(text, str) and text.startswith("...") and element.get(key):
                element[key] = f"{element[key]}\r\n{text[3:]}"
            else:
                element[key] = text
    for key in ("alias", "code"):
        for item in diff.get(key, ()):
            if item not in element.setdefault(key, []):
                element[key].append(clone(item))
    for key in ("sliceName", "sliceIsConstraining", "orderMeaning"):
        if key in diff:
            element[key] = diff[key]

    _merge_cardinality(element, diff, base, is_slice, at, problems)
    _merge_types(element, diff, base, at, problems)
    _merge_values(element, diff, base, at, problems)
    _merge_flags(element, diff, base, at, problems)
    _merge_binding(element, diff, base, at, problems)

    if "contentReference" in diff and diff["contentReference"] != base.get("contentReference"):
        problems.add(at, "contentReference can only be defined in specializations (ElementDefinition.contentReference)")
    if base.get("contentReference"):
        stated = [k for k in ("type", "binding") if k in diff] + _value_keys(diff, "fixed") + _value_keys(diff, "pattern")
        if stated:
            problems.add(at, f"an element with a contentReference cannot state {', '.join(stated)} (eld-5); "
                             "constrain the children instead")
    if "maxLength" in diff:
        if "maxLength" in base and diff["maxLength"] > base["maxLength"]:
            problems.add(at, f"maxLength {diff['maxLength']} is greater than the base maxLength {base['maxLength']}")
        element["maxLength"] = diff["maxLength"]
    for example in diff.get("example", ()):
        if example not in element.setdefault("example", []):
            element["example"].append(clone(example))
    for condition in diff.get("condition", ()):
        if condition not in element.setdefault("condition", []):
            element["condition"].append(condition)
    _merge_constraints(element, diff, at, problems)
    for mapping in diff.get("mapping", ()):
        if mapping not in element.setdefault("mapping", []):
            element["mapping"].append(clone(mapping))
    for key in ("extension", "modifierExtension"):
        for extension in diff.get(key, ()):
            kept = [e for e in element.get(key, ()) if e.get("url") != extension.get("url")]
            element[key] = kept + [clone(extension)]


def _merge_cardinality(element: dict, diff: dict, base: dict, is_slice: bool, at: str, problems: Problems) -> None:
    """profiling.html "Changing Cardinality": only narrowing (SNAP-04)."""
    if "min" in diff:
        if diff["min"] < base.get("min", 0) and not is_slice:
            problems.add(at, f"min {diff['min']} is less than the base min {base.get('min', 0)}")
        element["min"] = diff["min"]
    if "max" in diff:
        if not (diff["max"] == "*" or str(diff["max"]).isdigit()):
            problems.add(at, f"max {diff['max']!r} is neither a number nor *")
        elif _larger_max(diff["max"], base.get("max", "*")):
            problems.add(at, f"max {diff['max']} is greater than the base max {base.get('max')}")
        element["max"] = diff["max"]
    if element.get("max", "*") != "*" and str(element.get("max")).isdigit() and element.get("min", 0) > int(element["max"]):
        problems.add(at, f"min {element['min']} is greater than max {element['max']} (eld-2)")


def _merge_types(element: dict, diff: dict, base: dict, at: str, problems: Problems) -> None:
    """The differential's type list replaces the base's; each type must be one the base allows
    (profiling.html "Limiting Types"). A binding left without a bindable type is dropped."""
    if "type" not in diff:
        return
    base_types = base.get("type", [])
    if base_types:
        for type_ref in diff["type"]:
            code = type_code(type_ref)
            if not derives_from(code, base_types):
                allowed = ", ".join(type_code(t) for t in base_types)
                problems.add(at, f"type {code} is not one of the base's types ({allowed})")
    element["type"] = clone(diff["type"])
    if "binding" in element and not (set(type_codes(element)) & BINDABLE_TYPES):
        del element["binding"]


def _merge_values(element: dict, diff: dict, base: dict, at: str, problems: Problems) -> None:
    """fixed[x] / pattern[x] / minValue[x] / maxValue[x]: replaced; the value's type must be the
    element's type (eld-6/eld-7; TC obs-badfixed, obs-badpattern); an inherited fixed value cannot
    be changed or relaxed into a pattern."""
    codes = type_codes(element)
    for prefix in _VALUE_PREFIXES:
        for key in _value_keys(diff, prefix):
            kind = value_type(key)
            if codes and kind not in codes:
                problems.add(at, f"{key} is a {kind} but the element's type is {' | '.join(codes)}")
            inherited = _value_keys(base, "fixed")
            if inherited and (prefix == "pattern" or any(base[k] != diff[key] for k in inherited)):
                problems.add(at, f"{key} conflicts with the inherited {inherited[0]}")
            for old in _value_keys(element, "fixed") + _value_keys(element, "pattern"):
                del element[old]
            element[key] = clone(diff[key])
    for prefix in ("minValue", "maxValue"):
        for key in _value_keys(diff, prefix):
            for old in _value_keys(element, prefix):
                del element[old]
            element[key] = clone(diff[key])


def _merge_flags(element: dict, diff: dict, base: dict, at: str, problems: Problems) -> None:
    """mustSupport may go false -> true only (SNAP-10); isModifier can only be set by the original
    definition or an extension definition, isSummary not at all in a profile (SNAP-11)."""
    if "mustSupport" in diff:
        if base.get("mustSupport") is True and diff["mustSupport"] is False:
            problems.add(at, "mustSupport cannot change from true to false")
        element["mustSupport"] = diff["mustSupport"]
    path = element.get("path", "")
    extension = path == "Extension" or path.rpartition(".")[2] in ("extension", "modifierExtension")
    if "isModifier" in diff and diff["isModifier"] != base.get("isModifier", False):
        if not extension:
            problems.add(at, f"isModifier cannot change from {base.get('isModifier', False)} to {diff['isModifier']} in a profile")
        else:
            element["isModifier"] = diff["isModifier"]
    if extension and "isModifierReason" in diff:
        element["isModifierReason"] = diff["isModifierReason"]
    if "isSummary" in diff:
        if "isSummary" in base and diff["isSummary"] != base["isSummary"]:
            problems.add(at, f"isSummary cannot change from {base['isSummary']} to {diff['isSummary']}")
        else:
            element["isSummary"] = diff["isSummary"]


def _merge_binding(element: dict, diff: dict, base: dict, at: str, problems: Problems) -> None:
    """Bindings merge property by property, so a differential that only strengthens keeps the base
    value set (TC obs-rebind); strength may only get stronger (SNAP-09)."""
    if "binding" not in diff:
        return
    new = diff["binding"]
    old = element.get("binding") or base.get("binding")
    if old and "strength" in new and "strength" in old:
        if _STRENGTH.get(new["strength"], -1) < _STRENGTH.get(old["strength"], -1):
            problems.add(at, f"binding strength cannot be weakened from {old['strength']} to {new['strength']}")
    merged = clone(old) if old else {}
    if "valueSet" in new and new["valueSet"] != merged.get("valueSet") and "description" not in new:
        merged.pop("description", None)
    merged.update(clone(new))
    element["binding"] = merged


def _merge_constraints(element: dict, diff: dict, at: str, problems: Problems) -> None:
    """Constraints are cumulative (SNAP-12): a profile adds, never removes; keys stay unique (eld-14).
    The profile's own constraints carry no `source` in its snapshot (SNAP-18)."""
    existing = {c.get("key"): c for c in element.get("constraint", ())}
    for constraint in diff.get("constraint", ()):
        key = constraint.get("key")
        if key in existing:
            if existing[key].get("expression") != constraint.get("expression"):
                problems.add(at, f"constraint {key} is already defined with a different expression")
            continue
        element.setdefault("constraint", []).append(clone(constraint))
        existing[key] = constraint
