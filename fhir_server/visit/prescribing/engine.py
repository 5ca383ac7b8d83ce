"""The rule set: which registered rules are on, with which parameters (profiles/prescribing-rules.json),
and the data they read. `RuleSet.check(ctx)` runs every enabled rule in the configured order and
returns all refusals (empty: the MedicationRequest may be made active)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .rules import MODULES as RULE_MODULES  # importing them registers the rules
from .data import PROFILES_DIR, RuleConfigError, RuleData, load_controlled, load_protocols, load_questionnaires, read_json
from .model import PrescribingContext, Refusal
from .registry import RULES, Rule

DEFAULT_CONFIG = PROFILES_DIR / "prescribing-rules.json"  # the shipped configuration
__all__ = ["RULE_MODULES", "DEFAULT_CONFIG", "RuleSet", "build_rule_set", "load_rule_data", "load_rule_set"]


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[tuple[Rule, Mapping[str, Any]], ...]  # enabled rules with their effective parameters
    data: RuleData

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(r.id for r, _ in self.rules)

    def check(self, ctx: PrescribingContext) -> list[Refusal]:
        refusals: list[Refusal] = []
        for rule, params in self.rules:
            try:
                refusals.extend(rule.run(ctx, self.data, params))
            except Exception:  # malformed input a rule did not expect: fail closed, naming the rule
                refusals.append(Refusal(rule.id, "This rule could not be checked on the given resources, so the "
                                        "prescription is refused.", "MedicationRequest"))
        return refusals


def build_rule_set(config: Mapping[str, Any], data: RuleData) -> RuleSet:
    """A RuleSet from a configuration document: {"rules": {rule id: {"enabled": bool, "params": {...}}}}.
    Unknown rule ids and unknown parameters are errors; a registered rule the configuration does not
    mention runs with its defaults (a new rule is on until a deployment turns it off)."""
    entries = config.get("rules")
    if not isinstance(entries, dict):
        raise RuleConfigError("the prescribing-rules configuration needs a 'rules' object (rule id -> settings)")
    unknown = sorted(set(entries) - set(RULES))
    if unknown:
        raise RuleConfigError(f"unknown prescribing rule id(s) in the configuration: {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(RULES))})")
    chosen = []
    for rule_id in list(entries) + [r for r in RULES if r not in entries]:
        rule, settings = RULES[rule_id], entries.get(rule_id, {})
        if not isinstance(settings, dict) or set(settings) - {"enabled", "params", "note"}:
            raise RuleConfigError(f"rule {rule_id}: settings are {{'enabled', 'params', 'note'}}")
        if not isinstance(settings.get("enabled", True), bool):
            raise RuleConfigError(f"rule {rule_id}: 'enabled' must be true or false")
        params = settings.get("params") or {}
        extra = sorted(set(params) - set(rule.defaults))
        if extra:
            raise RuleConfigError(f"rule {rule_id}: unknown parameter(s) {', '.join(extra)} "
                                  f"(known: {', '.join(sorted(rule.defaults)) or 'none'})")
        for key, value in params.items():
            if type(value) is not type(rule.defaults[key]):
                raise RuleConfigError(f"rule {rule_id}: parameter {key} must be a {type(rule.defaults[key]).__name__}")
        if settings.get("enabled", True):
            chosen.append((rule, {**copy.deepcopy(dict(rule.defaults)), **copy.deepcopy(params)}))
    return RuleSet(tuple(chosen), data)


def load_rule_data(profiles_dir: Path = PROFILES_DIR, *, protocols: Path | None = None,
                   controlled: Path | None = None) -> RuleData:
    questionnaires = load_questionnaires(Path(profiles_dir) / "questionnaires")
    return RuleData(
        protocols=load_protocols(protocols or Path(profiles_dir) / "prescribing-protocols.json", questionnaires),
        controlled=load_controlled(controlled or Path(profiles_dir) / "controlled-substances.json"),
        questionnaires=questionnaires)


def load_rule_set(config: Path | Mapping[str, Any] | None = None, *, profiles_dir: Path = PROFILES_DIR) -> RuleSet:
    """The deployment's rule set: the configuration (a path, a parsed document, or
    profiles/prescribing-rules.json) and the data files under `profiles_dir`. Not cached: the caller
    keeps it (once per process)."""
    if config is None:
        config = Path(profiles_dir) / "prescribing-rules.json"
    document = config if isinstance(config, Mapping) else read_json(Path(config))
    return build_rule_set(document, load_rule_data(profiles_dir))
