"""The authorization server's pages: sign-in, consent, patient picker, error, EHR-launch hand-off.

Pure functions from values to an HTML string; the endpoints own sessions, CSRF tokens (pass them in
`hidden`) and what a submitted form means. Every interpolated value is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .layout import error_summary, esc, hidden_inputs, page


@dataclass(frozen=True)
class ScopeChoice:
    """One line of the consent form.

    `scope` is posted as a `scope` form value when kept (it may hold several space-separated scopes,
    e.g. "openid fhirUser"). `required` choices cannot be removed. `narrowings` are (scope, label)
    pairs offered, unchecked, in place of the whole scope (e.g. Observation categories).
    """

    scope: str
    label: str
    checked: bool = True
    required: bool = False
    narrowings: tuple[tuple[str, str], ...] = ()


def render_login(*, action: str, hidden: dict[str, str], client_name: str, error: str | None = None,
                 username: str = "") -> str:
    invalid = ' aria-invalid="true" aria-describedby="error-summary"' if error else ""
    body = (
        "<h1>Sign in</h1>\n"
        f'<p class="app"><strong>{esc(client_name)}</strong> wants to connect to your health record.</p>\n'
        f"{error_summary(error)}"
        f'<form method="post" action="{esc(action)}">\n'
        f"{hidden_inputs(hidden)}"
        '<label for="username">Username</label>\n'
        f'<input type="text" id="username" name="username" value="{esc(username)}" autocomplete="username" '
        f'autocapitalize="none" spellcheck="false" required{invalid}>\n'
        '<label for="password">Password</label>\n'
        f'<input type="password" id="password" name="password" autocomplete="current-password" required{invalid}>\n'
        '<div class="actions"><button type="submit" id="sign-in">Sign in</button></div>\n'
        "</form>\n"
    )
    return page(("Error: " if error else "") + f"Sign in – {client_name}", body)


def _choice(index: int, choice: ScopeChoice) -> str:
    if choice.required:
        return (
            '<li class="fixed">'
            f'<input type="hidden" name="scope" value="{esc(choice.scope)}">'
            f'<span class="mark" aria-hidden="true">✓</span>{esc(choice.label)} '
            '<span class="muted">(always included)</span></li>\n'
        )
    box_id = f"scope-{index}"
    checked = " checked" if choice.checked else ""
    out = (
        f'<li><div class="check"><input type="checkbox" name="scope" value="{esc(choice.scope)}" '
        f'id="{box_id}"{checked}><label for="{box_id}">{esc(choice.label)}</label></div>\n'
    )
    if choice.narrowings:
        out += (
            f'<fieldset class="narrowings" aria-describedby="{box_id}-hint">\n'
            "<legend>Or only these categories instead of all</legend>\n"
            f'<p class="hint" id="{box_id}-hint">To share only some categories, uncheck the box above '
            "and check the categories to share.</p>\n"
        )
        for n, (scope, label) in enumerate(choice.narrowings, 1):
            sub_id = f"{box_id}-{n}"
            out += (f'<div class="check"><input type="checkbox" name="scope" value="{esc(scope)}" id="{sub_id}">'
                    f'<label for="{sub_id}">{esc(label)}</label></div>\n')
        out += "</fieldset>\n"
    return out + "</li>\n"


def render_consent(*, action: str, hidden: dict[str, str], client_name: str, user_display: str,
                   choices: list[ScopeChoice], patient_display: str | None = None, offline: bool = False,
                   for_clinician: bool = False) -> str:
    """`for_clinician`: the signed-in user shares a patient's record (theirs to treat), not their own."""
    app = esc(client_name)
    record = "health records" if for_clinician else "your health record"
    patient = f'<p>Records of: <strong>{esc(patient_display)}</strong></p>\n' if patient_display else ""
    offline_notice = (
        '<section class="notice" aria-labelledby="offline-title">\n'
        '<h2 id="offline-title">Access while you are away</h2>\n'
        f"<p><strong>{app}</strong> asks to keep the access you allow here even when you are not using it. "
        f"If you allow it, the app can keep using {'these records' if for_clinician else 'your record'} for months, "
        "without you signing in again, "
        "until you revoke its access.</p>\n"
        "</section>\n"
    ) if offline else ""
    items = "".join(_choice(i, c) for i, c in enumerate(choices, 1))
    body = (
        f"<h1>Allow {app} to access {record}?</h1>\n"
        f'<p class="app"><strong>{app}</strong> wants to connect to {record}. '
        f"You are signed in as <strong>{esc(user_display)}</strong>.</p>\n"
        f"{patient}"
        f'<form method="post" action="{esc(action)}">\n'
        f"{hidden_inputs(hidden)}"
        f"<fieldset>\n<legend>{app} is asking to:</legend>\n"
        f'<ul class="options">\n{items}</ul>\n</fieldset>\n'
        f"{offline_notice}"
        f'<p class="muted">Uncheck anything you do not want to share. Deny gives {app} no access.</p>\n'
        '<div class="actions">'
        '<button type="submit" name="decision" value="allow" id="approve">Allow</button>'
        '<button type="submit" name="decision" value="deny" id="deny" class="secondary">Deny</button>'
        "</div>\n</form>\n"
    )
    return page(f"Allow access? – {client_name}", body)


def render_patient_picker(*, action: str, hidden: dict[str, str], patients: list[tuple[str, str]],
                          error: str | None = None, client_name: str | None = None) -> str:
    intro = (f'<p class="app"><strong>{esc(client_name)}</strong> will open the record you choose.</p>\n'
             if client_name else "")
    if not patients:
        body = ("<h1>Choose a patient</h1>\n" + intro + error_summary(error)
                + '<p id="no-patients">No patients are available to you, so the app cannot be opened '
                  "with a patient record.</p>\n")
        return page(("Error: " if error else "") + "Choose a patient", body)
    options = "".join(
        f'<li><div class="check"><input type="radio" name="patient" value="{esc(pid)}" id="patient-{n}" required>'
        f'<label for="patient-{n}">{esc(display)}</label></div></li>\n'
        for n, (pid, display) in enumerate(patients, 1)
    )
    body = (
        "<h1>Choose a patient</h1>\n"
        f"{intro}{error_summary(error)}"
        f'<form method="post" action="{esc(action)}">\n'
        f"{hidden_inputs(hidden)}"
        "<fieldset>\n<legend>Whose record should the app open?</legend>\n"
        f'<ul class="options">\n{options}</ul>\n</fieldset>\n'
        '<div class="actions"><button type="submit" id="choose">Continue</button></div>\n'
        "</form>\n"
    )
    return page(("Error: " if error else "") + "Choose a patient", body)


def render_error(*, title: str, message: str) -> str:
    body = (f"<h1>{esc(title)}</h1>\n<p>{esc(message)}</p>\n"
            '<p class="muted">You can close this window and return to the app.</p>\n')
    return page(f"Error: {title}", body)


def render_launched(*, launch_url: str, app_name: str) -> str:
    """The EHR-launch hand-off. `launch_url` must be http(s): anything else (javascript:) is refused."""
    if urlsplit(launch_url).scheme.lower() not in ("http", "https"):
        raise ValueError(f"launch URL must be http or https: {launch_url!r}")
    app = esc(app_name)
    body = (f"<h1>Open {app}</h1>\n"
            f"<p>The app is ready to open with the current record.</p>\n"
            f'<p><a id="open-app" href="{esc(launch_url)}">Open {app}</a></p>\n')
    return page(f"Open {app_name}", body)
