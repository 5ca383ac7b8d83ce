"""Compile a parsed search expression into typed paths that walk a resource's JSON directly.

Every branch of the expression is resolved against the R4 type model once, at compile time:
choice elements become their JSON keys (`Observation.value.ofType(Quantity)` -> "valueQuantity";
`Observation.value` -> one path per allowed type), type filters on non-choice elements are
decided statically, and each resulting `TypedPath` knows the FHIR type of what it yields (so the
index converter is chosen once, not per value) and, for `code` elements with a required binding to
a single code system, that system.

Evaluation semantics follow FHIRPath path navigation over JSON (R4 json.html): arrays are
flattened, absent elements yield nothing, `where(resolve() is T)` keeps references whose literal
names type T (values.references.reference_type), `[n]`/`first()` index the whole collection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_server.search.fhirpath.fixups import fix_r4_expression
from fhir_server.search.fhirpath.syntax import (
    And,
    Chain,
    Compare,
    Exists,
    Expression,
    Index,
    Member,
    OfType,
    Unsupported,
    WhereEquals,
    WhereResolveIs,
    parse,
)
from fhir_server.search.fhirpath.syntax import Union as UnionExpr
from fhir_server.search.fhirpath.types import ElementInfo, TypeTable
from fhir_server.search.values.references import reference_type

__all__ = ["BooleanPath", "CompiledPath", "TypedPath", "compile_expression", "Unsupported"]

_GET, _RESOLVE_IS, _EQUALS, _INDEX = range(4)
_ABSTRACT_RESOURCE_ROOTS = ("Resource", "DomainResource")


@dataclass(frozen=True, slots=True)
class TypedPath:
    """One statically typed branch of a search expression."""

    from_root: bool  # starts at the resource (`%resource`) rather than at the focus
    ops: tuple[tuple[int, object], ...]
    fhir_type: str
    code_system: str | None = None
    targets: tuple[str, ...] | None = None
    evaluate: Callable[[object, object], list] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluate", _make_walker(self.from_root, self.ops))

    @property
    def first_key(self) -> str | None:
        """The JSON key this path reads first from its focus (None if it starts otherwise)."""
        if self.from_root or not self.ops or self.ops[0][0] != _GET:
            return None
        return self.ops[0][1]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class BooleanPath:
    """A predicate (`exists()`, `=`/`!=` a literal, `and`), evaluated with FHIRPath's rules:
    empty propagates through `=`, `!=` and `and` (three-valued logic, N1 "Boolean logic")."""

    evaluate: Callable[[object, object], list]
    fhir_type: str = "boolean"
    code_system: str | None = None
    targets: tuple[str, ...] | None = None


CompiledPath = TypedPath | BooleanPath


@dataclass(slots=True)
class _Partial:
    ops: list
    type_name: str
    from_root: bool
    pending: tuple[str, ElementInfo] | None = None  # a choice element not yet narrowed to a type
    info: ElementInfo | None = None  # the last element navigated to
    targets: tuple[str, ...] | None = None


def compile_expression(expression: str, focus_type: str, resource_type: str, table: TypeTable) -> tuple[CompiledPath, ...]:
    """Compile `expression`, evaluated on a node of type `focus_type` inside a `resource_type`.

    Raises `Unsupported` when the expression leaves the compiled subset or names elements the type
    table does not know; the caller then uses fhirpathpy.
    """
    tree = parse(fix_r4_expression(expression))
    if isinstance(tree, UnionExpr):
        return _compile_union(tree, focus_type, resource_type, table)
    return (BooleanPath(_compile_predicate(tree, focus_type, resource_type, table)),)


def _compile_union(union: UnionExpr, focus_type: str, resource_type: str, table: TypeTable) -> tuple[TypedPath, ...]:
    paths: list[TypedPath] = []
    for chain in union.chains:
        paths.extend(_compile_chain(chain, focus_type, resource_type, table))
    return tuple(dict.fromkeys(paths))


def _compile_predicate(tree: Expression, focus_type: str, resource_type: str, table: TypeTable) -> Callable[[object, object], list]:
    if isinstance(tree, And):
        left = _compile_predicate(tree.left, focus_type, resource_type, table)
        right = _compile_predicate(tree.right, focus_type, resource_type, table)

        def conjunction(focus: object, resource: object) -> list:
            a, b = left(focus, resource), right(focus, resource)
            if a == [False] or b == [False]:
                return [False]
            return [True] if a == [True] and b == [True] else []

        return conjunction
    if isinstance(tree, (Exists, Compare)):
        operand = _compile_union(tree.operand, focus_type, resource_type, table)
        if isinstance(tree, Exists):
            return lambda focus, resource: [any(p.evaluate(focus, resource) for p in operand)]
        literal, negated = tree.literal, tree.negated

        def comparison(focus: object, resource: object) -> list:
            values = [v for p in operand for v in p.evaluate(focus, resource)]
            if not values:
                return []
            # N1 equality: collections of different sizes are unequal; values of different
            # types are unequal (a dateTime is not `false`).
            equal = len(values) == 1 and values[0].__class__ is literal.__class__ and values[0] == literal
            return [equal != negated]

        return comparison
    raise Unsupported(f"predicate {tree!r}")  # pragma: no cover - parse() yields no other forms


def _compile_chain(chain: Chain, focus_type: str, resource_type: str, table: TypeTable) -> list[TypedPath]:
    steps = list(chain.steps)
    if chain.root == "%resource":
        partials = [_Partial([], resource_type, True)]
    elif chain.root is None:
        partials = [_Partial([], focus_type, False)]
    elif chain.root == focus_type or (
        chain.root in _ABSTRACT_RESOURCE_ROOTS and focus_type in table.resource_types
    ):
        partials = [_Partial([], focus_type, False)]  # a type name at the start filters the focus
    elif chain.root in table.resource_types:
        return []  # a branch for another resource type yields nothing here
    else:
        partials = [_Partial([], focus_type, False)]
        steps.insert(0, Member(chain.root))
    for step in steps:
        partials = [out for p in partials for out in _apply(step, p, table)]
    return [_finish(settled) for p in partials for settled in _settle(p)]


def _apply(step, partial: _Partial, table: TypeTable) -> list[_Partial]:
    if isinstance(step, OfType):
        return _of_type(partial, step.type_name, table)
    settled = _settle(partial)
    if isinstance(step, Member):
        return [_member(p, step.name, table) for p in settled]
    out = []
    for p in settled:
        if isinstance(step, WhereResolveIs):
            if p.type_name != "Reference":
                raise Unsupported(f"resolve() on {p.type_name}")
            targets = (step.type_name,) if p.targets is None or step.type_name in p.targets else ()
            out.append(_Partial(p.ops + [(_RESOLVE_IS, step.type_name)], p.type_name, p.from_root, None, p.info, targets))
        elif isinstance(step, WhereEquals):
            if table.element(p.type_name, step.field) is None:
                raise Unsupported(f"where() on unknown element {p.type_name}.{step.field}")
            out.append(_Partial(p.ops + [(_EQUALS, (step.field, step.literal))], p.type_name, p.from_root, None, p.info, p.targets))
        elif isinstance(step, Index):
            out.append(_Partial(p.ops + [(_INDEX, step.position)], p.type_name, p.from_root, None, p.info, p.targets))
        else:  # pragma: no cover - the parser produces no other steps
            raise Unsupported(repr(step))
    return out


def _member(partial: _Partial, name: str, table: TypeTable) -> _Partial:
    info = table.element(partial.type_name, name)
    if info is None:
        raise Unsupported(f"unknown element {partial.type_name}.{name}")
    if info.choice:
        return _Partial(partial.ops, partial.type_name, partial.from_root, (name, info), info)
    if len(info.types) != 1:
        raise Unsupported(f"{partial.type_name}.{name} has several types but is no choice")
    return _Partial(partial.ops + [(_GET, name)], info.types[0], partial.from_root, None, info, info.targets)


def _of_type(partial: _Partial, type_name: str, table: TypeTable) -> list[_Partial]:
    # FHIRPath type tests accept specialisations: `(ConceptMap.source as uri)` keeps sourceCanonical.
    if partial.pending is None:
        # A non-choice element has one type: the filter is decided now.
        return [partial] if table.is_a(partial.type_name, type_name) else []
    name, info = partial.pending
    return [_choice_branch(partial, name, info, t) for t in info.types if table.is_a(t, type_name)]


def _settle(partial: _Partial) -> list[_Partial]:
    """Narrow a pending choice element to one branch per allowed type (FHIRPath `value` on a choice)."""
    if partial.pending is None:
        return [partial]
    name, info = partial.pending
    return [_choice_branch(partial, name, info, t) for t in info.types]


def _choice_branch(partial: _Partial, name: str, info: ElementInfo, type_name: str) -> _Partial:
    # R4 formats.html#choice: the JSON name is the element name + the type name, capitalised.
    key = name + type_name[0].upper() + type_name[1:]
    targets = info.targets if type_name in ("Reference", "canonical") else None
    return _Partial(partial.ops + [(_GET, key)], type_name, partial.from_root, None, info, targets)


def _finish(partial: _Partial) -> TypedPath:
    info = partial.info
    code_system = info.code_system if info is not None and partial.type_name == "code" else None
    targets = partial.targets if partial.type_name in ("Reference", "canonical", "Resource") else None
    return TypedPath(partial.from_root, tuple(partial.ops), partial.type_name, code_system, targets)


def _make_walker(from_root: bool, ops: tuple[tuple[int, object], ...]) -> Callable[[object, object], list]:
    """A closure that runs `ops` over JSON, flattening arrays; nulls (primitive arrays padded for
    their `_name` extensions, R4 json.html#primitive) are dropped."""
    if len(ops) == 1 and ops[0][0] == _GET:
        key = ops[0][1]

        def walk_one(focus: object, resource: object) -> list:
            node = resource if from_root else focus
            value = node.get(key) if node.__class__ is dict else None  # type: ignore[union-attr]
            if value is None:
                return []
            if value.__class__ is list:
                return [v for v in value if v is not None]
            return [value]

        return walk_one

    def walk(focus: object, resource: object) -> list:
        nodes = [resource if from_root else focus]
        for op, arg in ops:
            if op == _GET:
                out: list = []
                for node in nodes:
                    if node.__class__ is dict:
                        value = node.get(arg)  # type: ignore[call-overload]
                        if value is None:
                            continue
                        if value.__class__ is list:
                            out.extend(value)
                        else:
                            out.append(value)
                nodes = out
            elif op == _RESOLVE_IS:
                nodes = [n for n in nodes if reference_type(n) == arg]
            elif op == _EQUALS:
                name, literal = arg  # type: ignore[misc]
                nodes = [n for n in nodes if n.__class__ is dict and n.get(name) == literal]
            else:
                nodes = nodes[arg : arg + 1]  # type: ignore[misc]
            if not nodes:
                return nodes
        return [n for n in nodes if n is not None]

    return walk
