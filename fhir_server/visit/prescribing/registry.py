"""The rule registry: every rule is a function registered here under its id, with what it checks,
where its data lives and its default parameters. The configuration turns rules on and off and
overrides their parameters (engine.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .data import RuleData
from .model import PrescribingContext, Refusal

Check = Callable[[PrescribingContext, RuleData, Mapping[str, Any]], list[Refusal]]


@dataclass(frozen=True)
class Rule:
    id: str
    checks: str          # one line: what the rule checks
    data: str            # where its data lives
    defaults: Mapping[str, Any]
    run: Check


RULES: dict[str, Rule] = {}


def rule(rule_id: str, *, checks: str, data: str, defaults: Mapping[str, Any] | None = None):
    def register(fn: Check) -> Check:
        if rule_id in RULES:
            raise ValueError(f"prescribing rule {rule_id!r} registered twice")
        RULES[rule_id] = Rule(rule_id, checks, data, dict(defaults or {}), fn)
        return fn
    return register
