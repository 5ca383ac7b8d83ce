"""The one shape every validator in this package reports in: an OperationOutcome issue.

Structure, profile, terminology and Questionnaire checks all return lists of `Issue`; the write
path and `$validate` turn them into an OperationOutcome (fhir_server/errors.py). `rule` names the
rule that was broken (a constraint key such as `pat-1`, or one of ours such as `cardinality-min`,
`binding-required`, `qr-required-item`) so tests and clients can tell issues apart without
parsing text; it goes into `issue.details.coding`. Diagnostics never echo patient data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Issue", "SEVERITIES", "has_errors"]

SEVERITIES = ("fatal", "error", "warning", "information")


@dataclass(frozen=True, slots=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # OperationOutcome IssueType: structure, required, value, invariant, code-invalid, not-found,
    #            business-rule, extension, invalid, not-supported, exception, informational ...
    expression: str  # FHIRPath location from the resource root, e.g. "Encounter.class", "QuestionnaireResponse.item[2].answer[0]"
    diagnostics: str  # human-readable: names the rule, the profile or Questionnaire, never the offending value
    rule: str | None = None  # machine id of the rule: a constraint key ("pat-1") or one of ours ("binding-required")


def has_errors(issues: list[Issue]) -> bool:
    return any(issue.severity in ("fatal", "error") for issue in issues)
