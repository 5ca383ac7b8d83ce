"""FHIR errors by meaning, each carrying the HTTP status and the OperationOutcome it becomes.

Interactions raise these; the API layer turns any of them into an OperationOutcome response
(R4 operationoutcome.html, http.html "Errors"). Diagnostics never carry patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from profiles.canonical import CANONICAL_BASE


# issue.details.coding system for the rule a validation issue reports (research/validation.md VAL-80)
VALIDATION_RULE_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/validation-rule"


@dataclass(frozen=True, slots=True)
class OutcomeIssue:
    severity: str  # fatal | error | warning | information
    code: str  # IssueType, http://hl7.org/fhir/R4/valueset-issue-type.html
    diagnostics: str
    expression: str | None = None
    rule: str | None = None  # the validation rule broken (a constraint key such as pat-1, or one of ours)

    def to_json(self) -> dict:
        issue: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.rule:
            issue["details"] = {"coding": [{"system": VALIDATION_RULE_SYSTEM, "code": self.rule}], "text": self.diagnostics}
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def operation_outcome(issues: Iterable[OutcomeIssue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


class FhirError(Exception):
    status = 500
    issue_code = "exception"

    def __init__(self, diagnostics: str, *, expression: str | None = None, issues: list[OutcomeIssue] | None = None):
        super().__init__(diagnostics)
        self.issues = issues or [OutcomeIssue("error", self.issue_code, diagnostics, expression)]

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


class InvalidRequest(FhirError):
    """400: the request or its resource is not valid FHIR."""

    status = 400
    issue_code = "invalid"


class InvalidResource(InvalidRequest):
    """400 with one issue per structural problem found in a resource."""

    issue_code = "structure"


class NotFound(FhirError):
    status = 404
    issue_code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    issue_code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    issue_code = "not-supported"


class Conflict(FhirError):
    status = 409
    issue_code = "conflict"


class Gone(FhirError):
    status = 410
    issue_code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    issue_code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    issue_code = "not-supported"


class UnprocessableEntity(FhirError):
    """422: well-formed, but breaks a business rule or profile."""

    status = 422
    issue_code = "business-rule"


class Unauthorized(FhirError):
    """401: no access token, or one that is expired, forged, revoked or for another server
    (RFC 6750 section 3: the answer names the Bearer scheme and the OAuth error)."""

    status = 401
    issue_code = "login"

    def __init__(self, diagnostics: str, *, oauth_error: str | None = "invalid_token"):
        super().__init__(diagnostics)
        challenge = 'Bearer realm="fhir"'
        if oauth_error:
            challenge += f', error="{oauth_error}", error_description="{diagnostics}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(FhirError):
    """403: the token is good but its scopes do not cover this interaction."""

    status = 403
    issue_code = "forbidden"

    def __init__(self, diagnostics: str, *, expression: str | None = None):
        super().__init__(diagnostics, expression=expression)
        self.headers = {"WWW-Authenticate": 'Bearer realm="fhir", error="insufficient_scope"'}


def business_rule(rule: str, message: str, expression: str) -> UnprocessableEntity:
    """422 with one `business-rule` issue naming the rule broken (its id in issue.details.coding)."""
    return UnprocessableEntity(message, issues=[OutcomeIssue("error", "business-rule", message, expression, rule)])


def conflict(rule: str, message: str, expression: str) -> Conflict:
    """409 with one `conflict` issue naming the rule (its id in issue.details.coding)."""
    return Conflict(message, issues=[OutcomeIssue("error", "conflict", message, expression, rule)])
