"""How the Questionnaire validator words its issues: one place, so every issue names the element
path, the rule id, the linkId and the Questionnaire, and none echoes an answer value.

Why a class: the severity of some rules depends on the response status (research/validation.md
B4.1: `completed` / `amended` are strict; other statuses turn missing required answers and
answers to disabled items into warnings), and every message carries the Questionnaire's
canonical; the reporter holds both for the whole walk.
"""

from __future__ import annotations

import re

from fhir_server.validation.issues import Issue

__all__ = ["Reporter", "shown_link_id"]

_SAFE_LINK_ID = re.compile(r"[A-Za-z0-9._:/\-]{1,64}")


def shown_link_id(link_id: object) -> str:
    """A client-supplied linkId as diagnostics may show it: only when it looks like an identifier,
    never free text that could carry patient data."""
    if isinstance(link_id, str) and _SAFE_LINK_ID.fullmatch(link_id):
        return f"'{link_id}'"
    return "(not shown)"


class Reporter:
    __slots__ = ("issues", "label", "strict")

    def __init__(self, label: str, strict: bool) -> None:
        self.issues: list[Issue] = []
        self.label = label  # the Questionnaire's url|version
        self.strict = strict  # status completed / amended

    def error(self, rule: str, code: str, expression: str, message: str) -> None:
        self.issues.append(Issue("error", code, expression, self._text(message), rule))

    def warning(self, rule: str, code: str, expression: str, message: str) -> None:
        self.issues.append(Issue("warning", code, expression, self._text(message), rule))

    def information(self, rule: str, code: str, expression: str, message: str) -> None:
        self.issues.append(Issue("information", code, expression, self._text(message), rule))

    def completion(self, rule: str, code: str, expression: str, message: str) -> None:
        """An expectation that only binds a finished response: error when completed/amended,
        warning otherwise (QR "in-progress" may be partial, questionnaireresponse.html)."""
        (self.error if self.strict else self.warning)(rule, code, expression, message)

    def _text(self, message: str) -> str:
        return f"{message} (Questionnaire {self.label})"
