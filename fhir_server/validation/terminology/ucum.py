"""A parser for UCUM unit expressions (case-sensitive form), to check `http://unitsofmeasure.org`
codes without a terminology server.

UCUM is grammar-defined: every well-formed expression over its atoms is a code of the system
(R4 terminologies-systems.html; UCUM §"Syntax rules"). The grammar (UCUM Appendix "Grammar"):

    main-term   := "/" term | term
    term        := term "." component | term "/" component | component
    component   := annotatable [annotation] | annotation | factor [annotation]
                 | "(" term ")" [annotation]
    annotatable := simple-unit exponent | simple-unit
    simple-unit := ATOM | PREFIX METRIC-ATOM
    exponent    := ["+" | "-"] digits
    annotation  := "{" printable ASCII except curly braces "}"

An annotation is accepted after a factor or a parenthesised term too ("/100{WBC}",
"g/(8.h){shift}"), as the core's own ucum-common value set uses them; all 1,409 UCUM codes
listed in core value sets parse. Only syntax and the atom/prefix tables are checked: no
dimensional analysis, no conversions.
"""

from __future__ import annotations

import re

from .ucum_atoms import METRIC_ATOMS, NON_METRIC_ATOMS, PREFIXES

__all__ = ["ucum_error"]

_STOP = frozenset("./(){}")
_ANNOTATABLE = re.compile(r"(?P<symbol>.+?)(?P<exponent>[+-]?\d+)?")


class _Invalid(Exception):
    pass


def ucum_error(expression: str) -> str | None:
    """None if `expression` is a valid UCUM unit, else why it is not."""
    if not expression:
        return "an empty string is not a UCUM unit"
    try:
        _Parser(expression).main_term()
    except _Invalid as exc:
        return f"'{expression}' is not a valid UCUM unit: {exc}"
    return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def main_term(self) -> None:
        if self.peek() == "/":
            self.pos += 1
        self.term()
        if self.pos != len(self.text):
            raise _Invalid(f"unexpected '{self.peek()}' at position {self.pos + 1}")

    def term(self) -> None:
        self.component()
        while self.peek() in {".", "/"}:
            self.pos += 1
            self.component()

    def component(self) -> None:
        char = self.peek()
        if char == "(":
            self.pos += 1
            self.term()
            if self.peek() != ")":
                raise _Invalid("unbalanced parenthesis")
            self.pos += 1
            self.optional_annotation()
            return
        if char == "{":
            self.annotation()
            return
        run = self.symbol_run()
        if not run:
            raise _Invalid(f"a unit is missing at position {self.pos + 1}")
        if not run.isdigit():  # else a factor, e.g. the "1" of "1/min" or "/100"
            match = _ANNOTATABLE.fullmatch(run)
            assert match is not None  # `run` is non-empty, so `.+?` always matches
            _check_simple_unit(match["symbol"])
        self.optional_annotation()

    def symbol_run(self) -> str:
        """Characters up to the next operator; a square-bracketed part is taken whole, since atoms
        such as [m/s2/Hz^(1/2)] contain operator characters."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _STOP:
            char = self.text[self.pos]
            if not "!" <= char <= "~":
                raise _Invalid(f"character {char!r} at position {self.pos + 1} is not allowed")
            if char == "[":
                end = self.text.find("]", self.pos)
                if end < 0:
                    raise _Invalid("unbalanced square bracket")
                self.pos = end
            self.pos += 1
        return self.text[start : self.pos]

    def optional_annotation(self) -> None:
        if self.peek() == "{":
            self.annotation()

    def annotation(self) -> None:
        end = self.text.find("}", self.pos)
        if end < 0:
            raise _Invalid("unbalanced curly brace")
        body = self.text[self.pos + 1 : end]
        if "{" in body or any(not " " <= char <= "~" for char in body):
            raise _Invalid("an annotation may only contain printable ASCII characters other than braces")
        self.pos = end + 1


def _check_simple_unit(symbol: str) -> None:
    if symbol in METRIC_ATOMS or symbol in NON_METRIC_ATOMS:
        return
    for length in (2, 1):
        prefix, atom = symbol[:length], symbol[length:]
        if prefix in PREFIXES and atom in METRIC_ATOMS:
            return
    if any(symbol[length:] in NON_METRIC_ATOMS for length in (1, 2) if symbol[:length] in PREFIXES):
        raise _Invalid(f"'{symbol}': a prefix is not allowed on a non-metric unit")
    raise _Invalid(f"unknown unit symbol '{symbol}'")
