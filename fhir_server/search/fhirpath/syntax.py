"""Parse the small FHIRPath subset that R4 search-parameter expressions are written in.

Grammar accepted (FHIRPath N1, http://hl7.org/fhirpath/N1/ — precedence: `.` and `[]` bind
tightest, then `as`/`is`, then `|`, then `=`/`!=`, then `and`):

    top     := compare ('and' compare)*
    compare := expr [('=' | '!=') literal]          literal: true | false | 'string'
    expr    := term ('|' term)*
    term    := primary postfix* ['as' TypeName]
    primary := '(' expr ')' | '%resource' | Identifier
    postfix := '.' Identifier
             | '.' ('as' | 'ofType') '(' TypeName ')'
             | '.where(' 'resolve()' 'is' TypeName ')'
             | '.where(' Identifier '=' 'string literal' ')'
             | '.first()' | '[' integer ']'
             | '.exists()'                          (last step of a single path only)

Anything else raises `Unsupported`; the caller then falls back to fhirpathpy. A navigation
expression is a `Union` of `Chain`s: postfixes applied to a parenthesised union are distributed
over its branches, which is what FHIRPath does for path navigation. The boolean forms (`Exists`,
`Compare`, `And`) cover the one R4 expression that is a predicate, Patient-deceased:
"Patient.deceased.exists() and Patient.deceased != false".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Chain",
    "Member",
    "OfType",
    "WhereResolveIs",
    "WhereEquals",
    "Index",
    "Step",
    "Union",
    "Unsupported",
    "Exists",
    "Compare",
    "And",
    "Expression",
    "parse",
]


class Unsupported(ValueError):
    """The expression uses FHIRPath outside the subset this module compiles."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str


@dataclass(frozen=True, slots=True)
class OfType:
    """`X as T`, `X.as(T)` and `X.ofType(T)`: the same filter once collections are allowed (see fixups)."""

    type_name: str


@dataclass(frozen=True, slots=True)
class WhereResolveIs:
    type_name: str


@dataclass(frozen=True, slots=True)
class WhereEquals:
    field: str
    literal: str


@dataclass(frozen=True, slots=True)
class Index:
    """`[n]`, and `first()` as `[0]`: picks from the whole collection built so far."""

    position: int


Step = Member | OfType | WhereResolveIs | WhereEquals | Index


@dataclass(frozen=True, slots=True)
class Chain:
    """One branch of a union. `root` is the leading identifier (a type name or the first member),
    "%resource", or None for a chain relative to the current focus."""

    root: str | None
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Union:
    chains: tuple[Chain, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    operand: Union


@dataclass(frozen=True, slots=True)
class Compare:
    operand: Union
    negated: bool  # `!=` rather than `=`
    literal: bool | str


@dataclass(frozen=True, slots=True)
class And:
    left: Expression
    right: Expression


Expression = Union | Exists | Compare | And

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<env>%[A-Za-z_]\w*)"
    r"|(?P<ident>[A-Za-z_]\w*)|(?P<punct>!=|[.()\[\]|=]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise Unsupported(f"unexpected text at {pos}: {text[pos:pos + 12]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token = self.peek()
        if token is None or (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            raise Unsupported(f"expected {value or kind} at token {self.pos}, got {token}")
        self.pos += 1
        return token[1]

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value and token[0] in ("punct", "ident")

    def conjunction(self) -> Expression:
        left = self.comparison()
        while self.at("and"):
            self.take("and")
            left = And(left, self.comparison())
        return left

    def comparison(self) -> Expression:
        chains, exists = self.expr()
        if exists:
            return Exists(Union(tuple(chains)))
        if self.at("=") or self.at("!="):
            negated = self.take() == "!="
            token = self.peek()
            if token is not None and token[0] == "string":
                literal: bool | str = self.take()[1:-1]
            elif token is not None and token[1] in ("true", "false"):
                literal = self.take() == "true"
            else:
                raise Unsupported(f"comparison with {token}")
            return Compare(Union(tuple(chains)), negated, literal)
        return Union(tuple(chains))

    def expr(self) -> tuple[list[Chain], bool]:
        """The chains of a union, and whether the (single) term ended in `.exists()`."""
        chains, exists = self.term()
        while self.at("|"):
            self.take("|")
            more, more_exists = self.term()
            if exists or more_exists:
                raise Unsupported("exists() inside a union")
            chains += more
        return chains, exists

    def term(self) -> tuple[list[Chain], bool]:
        chains = self.primary()
        while True:
            if self.at(".") and self.peek(1) == ("ident", "exists") and self.peek(2) == ("punct", "("):
                for expected in (".", "exists", "(", ")"):
                    self.take(expected)
                return chains, True  # exists() ends a term: what follows must be `and`/`|`/end
            if self.at("."):
                self.take(".")
                step = self.invocation()
            elif self.at("["):
                self.take("[")
                step = Index(int(self.take(kind="number")))
                self.take("]")
            else:
                break
            if isinstance(step, Index) and len(chains) > 1:
                # `(A | B)[0]` indexes the union, not each branch: not expressible as chains.
                raise Unsupported("indexing a union")
            chains = [Chain(c.root, c.steps + (step,)) for c in chains]
        if self.at("as"):
            self.take("as")
            type_filter = OfType(self.take(kind="ident"))
            chains = [Chain(c.root, c.steps + (type_filter,)) for c in chains]
        return chains, False

    def primary(self) -> list[Chain]:
        if self.at("("):
            self.take("(")
            chains, exists = self.expr()
            if exists:
                raise Unsupported("exists() inside parentheses")
            self.take(")")
            return chains
        token = self.peek()
        if token is not None and token[0] == "env":
            if token[1] != "%resource":
                raise Unsupported(f"environment variable {token[1]}")
            self.pos += 1
            return [Chain("%resource", ())]
        return [Chain(self.take(kind="ident"), ())]

    def invocation(self) -> Step:
        name = self.take(kind="ident")
        if not self.at("("):
            return Member(name)
        self.take("(")
        if name in ("as", "ofType"):
            step: Step = OfType(self.take(kind="ident"))
        elif name == "first":
            step = Index(0)
        elif name == "where":
            step = self.where_criteria()
        else:
            raise Unsupported(f"function {name}()")
        self.take(")")
        return step

    def where_criteria(self) -> Step:
        field = self.take(kind="ident")
        if field == "resolve":
            self.take("(")
            self.take(")")
            self.take("is")
            return WhereResolveIs(self.take(kind="ident"))
        self.take("=")
        literal = self.take(kind="string")[1:-1]
        if "\\" in literal:
            raise Unsupported("escaped string literal")
        return WhereEquals(field, literal)


def parse(expression: str) -> Expression:
    """Parse `expression` or raise `Unsupported`."""
    parser = _Parser(expression)
    tree = parser.conjunction()
    if parser.peek() is not None:
        raise Unsupported(f"trailing tokens from {parser.peek()}")
    return tree
