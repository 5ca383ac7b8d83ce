"""Server-rendered HTML pages of the authorization server (pure rendering; no scripts, no external assets)."""

from .describe import describe_scope
from .layout import SECURITY_HEADERS
from .render import (ScopeChoice, render_consent, render_error, render_launched, render_login,
                     render_patient_picker)

__all__ = ["SECURITY_HEADERS", "ScopeChoice", "describe_scope", "render_consent", "render_error",
           "render_launched", "render_login", "render_patient_picker"]
