"""The walk: the base tree and the differential tree side by side, producing the result tree.

Every base element is visited in base order (so the differential's order does not matter, A-03);
a base element the differential says nothing about is kept as is (with its whole subtree, slices
included); one it constrains is copied and merged (`merge.apply_differential`); where the
differential goes below an element the base does not expand, the element's type (or its
`type.profile`, or its `contentReference` target) supplies the children (validation.md A2.2
step 4). Slicing follows profiling.html "Slicing" and the published R4 output (SNAP-06, 07, 15,
16): slices copy the base element's subtree, inherited slices come first, new ones after.
"""

from __future__ import annotations

from dataclasses import dataclass

from .differential import DiffNode
from .errors import Problems
from .merge import apply_differential, copy_profile_text, extension_doco, fill_from_base
from .resolution import Definitions
from .slicing import (
    check_slice_cardinality,
    extension_slicing,
    is_extension_name,
    merge_slicing,
    reslice_position,
    type_slicing,
)
from .tree import Node, Structure, base_of, clone
from .typeinfo import datatype_url, renamed_choice_type, type_code, type_codes

__all__ = ["Scope", "Walk"]

Renamed = tuple[str, str, DiffNode]  # (element name as written, e.g. valueQuantity; its type; node)


@dataclass(frozen=True, slots=True)
class Scope:
    structure: Structure  # where the base nodes come from (resolves contentReference)
    in_slice: bool  # under a slice of this structure: a renamed choice is no type slice (SNAP-16)

    def sliced(self) -> Scope:
        return Scope(self.structure, True)


class Walk:
    def __init__(self, definitions: Definitions, problems: Problems, stamp_url: str) -> None:
        self.definitions = definitions
        self.problems = problems
        self.stamp_url = stamp_url

    # -- one element and its subtree -------------------------------------------------------

    def constrain(
        self,
        b: Node,
        d: DiffNode | None,
        scope: Scope,
        at: str,
        *,
        slice_name: str | None = None,
        narrow: str | None = None,
        keep_slicing: bool = True,
        template: bool = True,
    ) -> Node:
        """Base node `b` constrained by differential node `d` (its element and its children;
        `d`'s slices are the caller's business). `narrow` restricts a choice to one type,
        `slice_name` makes the result a slice of `b` (which then does not keep `b`'s slicing)."""
        diff_element = d.element if d is not None else None
        if diff_element is None and slice_name is None and narrow is None:
            node = Node(b.element, b.name)
        else:
            element = self._element(b, diff_element, at, slice_name=slice_name, narrow=narrow,
                                    keep_slicing=keep_slicing, template=template)
            node = Node(element, b.name, owned=True)
        if d is not None and d.children:
            base_children, child_scope = self._children_to_walk(node, b, scope, at)
            node.children = self.merge_children(base_children, d.children, child_scope, at)
        else:
            node.children = list(b.children)
        return node

    def _element(self, b: Node, diff: dict | None, at: str, *, slice_name: str | None, narrow: str | None,
                 keep_slicing: bool, template: bool) -> dict:
        base = b.element
        element = None
        if diff is not None and (url := self._single_profile(diff)) is not None:
            profile = self._resolve_profile(url, at)
            if profile is not None and template:
                element = self._profile_template(base, profile)
        if element is None:
            element = clone(base)
        element["base"] = base_of(base)
        if not keep_slicing or slice_name is not None:
            element.pop("slicing", None)
        if narrow is not None:
            element["type"] = [clone(t) for t in base.get("type", ()) if type_code(t) == narrow] or [{"code": narrow}]
        if slice_name is not None:
            element["sliceName"] = slice_name
        if diff is not None:
            if b.name == "Extension" or is_extension_name(b.name):
                extension_doco(element)
            root = self._profile_root(element, diff)
            if root is not None:
                copy_profile_text(element, root)
            apply_differential(element, diff, base, stamp_url=self.stamp_url, is_slice=bool(element.get("sliceName")),
                               at=at, problems=self.problems)
        return element

    def _single_profile(self, element: dict) -> str | None:
        types = element.get("type") or []
        if len(types) == 1 and types[0].get("profile") and types[0].get("code") != "Reference":
            return types[0]["profile"][0]
        return None

    def _profile_root(self, element: dict, diff: dict) -> dict | None:
        url = (self._single_profile(element) if element.get("sliceName") else None) or self._single_profile(diff)
        sd = self.definitions.with_snapshot(url) if url else None
        return sd["snapshot"]["element"][0] if sd else None

    def _resolve_profile(self, url: str, at: str) -> dict | None:
        sd = self.definitions.with_snapshot(url)
        if sd is None:
            self.problems.add(at, f"type.profile {url} cannot be resolved")
        return sd

    def _profile_template(self, base: dict, profile: dict) -> dict:
        """An element whose differential gives it one type with a profile (an extension slice,
        `Quantity` as SimpleQuantity) starts from that profile's root element, filled in with what
        the base element says (R4 Java single-match processing; published R4 snapshots)."""
        template = clone(profile["snapshot"]["element"][0])
        for key in ("id", "sliceName", "slicing", "base"):
            template.pop(key, None)
        template["path"] = base["path"]
        fill_from_base(template, base)
        return template

    def _children_to_walk(self, node: Node, b: Node, scope: Scope, at: str) -> tuple[list[Node], Scope]:
        """The children the differential's children are matched against: the base's own when it
        expands the element, else those of the element's type, type profile or content reference."""
        if b.children:
            return b.children, scope
        element = node.element
        reference = element.get("contentReference")
        if reference:
            target = scope.structure.content_target(reference)
            if target is None:
                self.problems.add(at, f"contentReference {reference} cannot be resolved")
                return [], scope
            owned = node.own()
            del owned["contentReference"]
            owned["type"] = clone(target.element.get("type", []))
            return target.children, scope
        types = element.get("type") or []
        if not types:
            self.problems.add(at, "the differential constrains children of an element that has no type")
            return [], scope
        if len(types) > 1 and any(t.get("code") != "Reference" for t in types):
            self.problems.add(at, f"the differential constrains children of an element with several types "
                                  f"({', '.join(type_codes(element))}); restrict it to one type first")
            return [], scope
        url = types[0]["profile"][0] if types[0].get("profile") else datatype_url(type_code(types[0]))
        structure = self.definitions.structure(url)
        if structure is None:
            self.problems.add(at, f"cannot walk into {url}: the definition cannot be resolved")
            return [], scope
        return structure.root.children, Scope(structure, False)

    # -- the children of one element -------------------------------------------------------

    def merge_children(self, base_children: list[Node], diff_children: dict[str, DiffNode], scope: Scope,
                       parent_at: str) -> list[Node]:
        names = {c.name for c in base_children}
        used: set[str] = set()
        out: list[Node] = []
        for child in base_children:
            at = f"{parent_at}.{child.name}"
            d = diff_children.get(child.name)
            if d is not None:
                used.add(child.name)
            renamed: list[Renamed] = []
            if child.name.endswith("[x]"):
                stem = child.name[:-3]
                codes = type_codes(child.element)
                for name, node in diff_children.items():
                    if name in names or name in used or not name.startswith(stem) or not name[len(stem):][:1].isupper():
                        continue
                    used.add(name)
                    code = renamed_choice_type(name, child.name, codes)
                    if code is None:
                        self.problems.add(f"{parent_at}.{name}", f"{name} does not name one of the types of {at} ({', '.join(codes)})")
                    else:
                        renamed.append((name, code, node))
            out.append(self.merge_slot(child, d, renamed, scope, at))
        for name, node in diff_children.items():
            if name not in used:
                self.problems.add(f"{parent_at}.{name}", f"{name} is not an element of {parent_at} in the base ({scope.structure.url})")
        return out

    def merge_slot(self, b: Node, d: DiffNode | None, renamed: list[Renamed], scope: Scope, at: str) -> Node:
        """One base child with everything the differential says about it: the element, its slices
        and its renamed choice forms."""
        if d is None and not renamed:
            return b
        if b.is_sliced:
            return self._sliced(b, d, renamed, scope, at)
        return self._unsliced(b, d, renamed, scope, at)

    def _unsliced(self, b: Node, d: DiffNode | None, renamed: list[Renamed], scope: Scope, at: str) -> Node:
        entry = d.element if d is not None else None
        slices = d.slices if d is not None else {}
        if renamed and scope.in_slice:
            # SNAP-16: under a slice, `valueQuantity` constrains value[x] itself to Quantity
            if len(renamed) > 1 or entry is not None or slices:
                self.problems.add(at, "inside a slice a choice element can only be constrained to a single type")
            _, code, node = renamed[0]
            return self.constrain(b, node, scope, at, narrow=code)
        if not slices and not renamed:
            result = self.constrain(b, d, scope, at)
            if entry is not None and "slicing" in entry:
                result.own()["slicing"] = clone(entry["slicing"])
            return result

        extension = is_extension_name(b.name)
        codes = type_codes(b.element)
        typed = {n: renamed_choice_type(n, b.name, codes) for n in slices} if b.name.endswith("[x]") else {}
        if len(slices) == 1 and not renamed and entry is None and not extension:
            (name, only), = slices.items()
            if not typed.get(name) and "slicing" not in (only.element or {}):
                # One named element on an unsliced element, without a slicing entry: R4's generator
                # constrains the element itself and keeps the name (familymemberhistory-genetic,
                # catalog `Composition.date:IssueDate`).
                return self.constrain(b, only, scope, f"{at}:{name}", slice_name=name)

        slicing = entry.get("slicing") if entry is not None else None
        if slicing is None:
            if extension:
                slicing = extension_slicing()
            elif b.name.endswith("[x]") and all(typed.get(n) for n in slices):
                slicing = type_slicing()
            else:
                self.problems.add(at, f"slices {', '.join(slices)} are declared but the differential gives {at} no slicing")
                slicing = {"rules": "open"}
        result = self.constrain(b, d, scope, at)
        element = result.own()
        element["slicing"] = clone(slicing)
        if extension and entry is None:
            extension_doco(element)
        if (renamed or typed) and all(typed.values()) and not (entry is not None and "type" in entry):
            # `valueQuantity` and `value[x]:valueQuantity` alike restrict the choice (SNAP-15)
            used = {code for _, code, _ in renamed} | set(typed.values())
            element["type"] = [t for t in element.get("type", []) if type_code(t) in used]

        declared = sorted(
            [(node.order, name, typed.get(name), node) for name, node in slices.items()]
            + [(node.order, name, code, node) for name, code, node in renamed],
            key=lambda item: item[0],
        )
        seen: set[str] = set()
        for _, name, code, node in declared:
            if name in seen:
                self.problems.add(f"{at}:{name}", "the slice is declared twice")
                continue
            seen.add(name)
            result.slices.append(self.constrain(b, node, scope.sliced(), f"{at}:{name}", slice_name=name, narrow=code))
        check_slice_cardinality(element, [s.element for s in result.slices], at, self.problems)
        return result

    def _sliced(self, b: Node, d: DiffNode | None, renamed: list[Renamed], scope: Scope, at: str) -> Node:
        """An element the base already slices: inherited slices stay first and in order, each
        constrained where the differential names it; new slices follow (SNAP-07, A-06)."""
        entry = d.element if d is not None else None
        codes = type_codes(b.element)
        declared: dict[str, tuple[int, str | None, DiffNode]] = {}
        for name, node in (d.slices.items() if d is not None else ()):
            code = renamed_choice_type(name, b.name, codes) if b.name.endswith("[x]") else None
            declared[name] = (node.order, code, node)
        for name, code, node in renamed:
            if name in declared:
                self.problems.add(f"{at}:{name}", "the slice is declared twice")
            declared[name] = (node.order, code, node)

        result = self.constrain(b, d, scope, at)
        if entry is not None and "slicing" in entry:
            result.own()["slicing"] = merge_slicing(b.element.get("slicing", {}), entry["slicing"], at, self.problems)
        closed = result.element.get("slicing", {}).get("rules") == "closed"

        names: list[str] = []
        for inherited in b.slices:
            name = inherited.element.get("sliceName", "")
            hit = declared.pop(name, None)
            if hit is None:
                result.slices.append(inherited)
            else:
                result.slices.append(self.constrain(inherited, hit[2], scope.sliced(), f"{at}:{name}"))
            names.append(name)
        for name, (_, code, node) in sorted(declared.items(), key=lambda item: item[1][0]):
            slice_at = f"{at}:{name}"
            if closed:
                self.problems.add(slice_at, f"new slice, but the inherited slicing of {at} is closed")
            parent = name.rpartition("/")[0]
            base = next((s for s in result.slices if parent and s.element.get("sliceName") == parent), b)
            position = reslice_position(names, name)
            result.slices.insert(position, self._new_slice(base, node, scope, slice_at, name, code))
            names.insert(position, name)
        if d is not None and (d.slices or renamed):
            check_slice_cardinality(result.element, [s.element for s in result.slices], at, self.problems)
        return result

    def _new_slice(self, b: Node, d: DiffNode, scope: Scope, at: str, name: str, code: str | None) -> Node:
        """A slice added to an inherited slicing. As in R4's generator it starts from the sliced
        element (not from a type profile's root), and an extension slice shows the content of its
        extension definition (elementdefinition-de)."""
        element = self._element(b, d.element, at, slice_name=name, narrow=code, keep_slicing=False, template=False)
        node = Node(element, b.name, owned=True)
        if d.children:
            base_children, child_scope = self._children_to_walk(node, b, scope.sliced(), at)
            node.children = self.merge_children(base_children, d.children, child_scope, at)
            return node
        profile = self._single_profile(element)
        structure = self.definitions.structure(profile) if profile and type_codes(element) == ["Extension"] else None
        node.children = list(structure.root.children) if structure is not None else list(b.children)
        return node
