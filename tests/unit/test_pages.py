"""The authorization server's HTML pages (smart_auth/pages): structure, accessibility, escaping, scope text."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

from smart_auth.pages import (SECURITY_HEADERS, ScopeChoice, describe_scope, render_consent, render_error,
                              render_launched, render_login, render_patient_picker)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
XSS = '<script>alert(1)</script>'
LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITALS = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    ancestors: list["Element"]
    text: str = ""

    def __getitem__(self, name: str) -> str | None:
        return self.attrs[name]

    def get(self, name: str) -> str | None:
        return self.attrs.get(name)


@dataclass
class Doc(HTMLParser):
    """A parsed page: every element (with its ancestors and text), checked for balanced tags."""

    elements: list[Element] = field(default_factory=list)
    doctype: str | None = None

    def __post_init__(self) -> None:
        HTMLParser.__init__(self, convert_charrefs=True)
        self._open: list[Element] = []

    @classmethod
    def parse(cls, markup: str) -> "Doc":
        doc = cls()
        doc.feed(markup)
        doc.close()
        assert not doc._open, f"unclosed elements: {[e.tag for e in doc._open]}"
        ids = [e.get("id") for e in doc.elements if e.get("id")]
        assert len(ids) == len(set(ids)), f"duplicate ids: {ids}"
        return doc

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), list(self._open))
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self._open and self._open[-1].tag == tag, f"</{tag}> closes {[e.tag for e in self._open]}"
        self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    # queries
    def all(self, tag: str, **attrs: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and all(e.get(k) == v for k, v in attrs.items())]

    def one(self, tag: str, **attrs: str) -> Element:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}>"
        return found[0]

    def by_id(self, id_: str) -> Element:
        return next(e for e in self.elements if e.get("id") == id_)

    def text(self, tag: str = "main") -> str:
        return " ".join(self.one(tag).text.split())

    def label_for(self, id_: str) -> str:
        return " ".join(self.one("label", **{"for": id_}).text.split())

    def submitted(self, button_id: str | None = None) -> list[tuple[str, str]]:
        """What the (only) form posts as rendered: hidden inputs, checked boxes and the clicked button."""
        out = []
        for e in self.elements:
            kept = e.get("type") not in ("checkbox", "radio") or "checked" in e.attrs
            if e.tag == "input" and e.get("name") and kept:
                out.append((e["name"], e.get("value") or ""))
            if e.tag == "button" and e.get("id") == button_id and e.get("name"):
                out.append((e["name"], e["value"]))
        return out

    def scopes(self, button_id: str | None = None) -> list[str]:
        return [v for k, v in self.submitted(button_id) if k == "scope"]


def check_page(markup: str) -> Doc:
    """What every page must be: HTML5, self-contained, script-free, labelled."""
    assert markup.startswith("<!doctype html>")
    doc = Doc.parse(markup)
    assert doc.doctype.lower() == "doctype html"
    assert doc.one("html")["lang"] == "en"
    assert doc.one("meta", charset="utf-8")
    assert "width=device-width" in doc.one("meta", name="viewport")["content"]
    assert doc.text("title").strip()
    doc.one("main")
    doc.one("style")
    assert not doc.all("script") and not doc.all("link") and not doc.all("img") and not doc.all("iframe")
    assert not any(k.startswith("on") for e in doc.elements for k in e.attrs), "inline event handlers"
    assert "url(" not in doc.one("style").text and "@import" not in doc.one("style").text
    for e in doc.all("input"):
        if e.get("type") != "hidden":
            assert doc.label_for(e["id"]), f"input {e['id']} has no label"
    for fieldset in doc.all("fieldset"):
        legends = [e for e in doc.all("legend") if fieldset in e.ancestors]
        assert legends and legends[0].text.strip(), "fieldset without legend"
    for form in doc.all("form"):
        assert form["method"] == "post"
    return doc


# ---------------------------------------------------------------------------------------------- sign-in

def login(**kw) -> str:
    args = dict(action="/auth/login", hidden={"request": "req-123", "csrf": "tok"}, client_name="Skin Check")
    return render_login(**{**args, **kw})


def test_login_form_fields():
    doc = check_page(login())
    form = doc.one("form")
    assert form["action"] == "/auth/login"
    assert doc.one("input", name="request")["type"] == "hidden"
    assert doc.submitted() == [("request", "req-123"), ("csrf", "tok"), ("username", ""), ("password", "")]
    user = doc.by_id("username")
    assert (user["name"], user["type"], user["autocomplete"]) == ("username", "text", "username")
    password = doc.by_id("password")
    assert (password["name"], password["type"], password["autocomplete"]) == \
        ("password", "password", "current-password")
    assert doc.label_for("username") == "Username" and doc.label_for("password") == "Password"
    button = doc.by_id("sign-in")
    assert button.tag == "button" and button["type"] == "submit" and form in button.ancestors
    assert "Skin Check wants to connect to your health record" in doc.text()
    assert not any(e.get("role") == "alert" for e in doc.elements)
    assert not doc.text("title").startswith("Error")


def test_login_error_is_announced_and_username_kept():
    doc = check_page(login(error="Wrong username or password", username="alice"))
    alert = next(e for e in doc.elements if e.get("role") == "alert")
    assert "Wrong username or password" in alert.text
    assert doc.by_id("username")["value"] == "alice"
    assert doc.by_id("password").get("value") is None  # never echo a password
    assert doc.by_id("username")["aria-invalid"] == "true"
    assert doc.text("title").startswith("Error:")


def test_login_escapes_everything():
    markup = login(client_name=XSS, error=XSS, username='"><b>x', action='/l?a=1&b="2"',
                   hidden={'n"x': '"><script>alert(2)</script>'})
    assert "<script>" not in markup and "<b>" not in markup
    doc = check_page(markup)
    assert f"{XSS} wants to connect" in doc.text()
    assert doc.by_id("username")["value"] == '"><b>x'
    assert doc.one("form")["action"] == '/l?a=1&b="2"'
    assert doc.submitted()[0] == ('n"x', '"><script>alert(2)</script>')


# ---------------------------------------------------------------------------------------------- consent

CHOICES = [
    ScopeChoice("openid fhirUser", "Know who you are", required=True),
    ScopeChoice("launch/patient", "Know which patient record is open", required=True),
    ScopeChoice("patient/Patient.rs", describe_scope("patient/Patient.rs")),
    ScopeChoice("patient/Observation.rs", describe_scope("patient/Observation.rs"),
                narrowings=((LAB, "Laboratory"), (VITALS, "Vital signs"))),
    ScopeChoice("patient/Condition.rs", describe_scope("patient/Condition.rs"), checked=False),
    ScopeChoice("offline_access", describe_scope("offline_access")),
]


def consent(**kw) -> str:
    args = dict(action="/auth/consent", hidden={"request": "req-123", "csrf": "tok"}, client_name="Skin Check",
                user_display="Alice Example", choices=CHOICES)
    return render_consent(**{**args, **kw})


def test_consent_checkboxes_and_defaults():
    doc = check_page(consent())
    assert doc.one("form")["action"] == "/auth/consent"
    boxes = doc.all("input", type="checkbox")
    assert [b["value"] for b in boxes] == ["patient/Patient.rs", "patient/Observation.rs", LAB, VITALS,
                                          "patient/Condition.rs", "offline_access"]
    assert all(b["name"] == "scope" for b in boxes)
    assert {b["value"] for b in boxes if "checked" in b.attrs} == \
        {"patient/Patient.rs", "patient/Observation.rs", "offline_access"}
    assert doc.label_for(boxes[1]["id"]) == "Read and search your observations"
    # what Allow posts untouched: required scopes (hidden) + the checked boxes
    assert doc.scopes("approve") == ["openid fhirUser", "launch/patient", "patient/Patient.rs",
                                     "patient/Observation.rs", "offline_access"]
    assert ("decision", "allow") in doc.submitted("approve")
    assert doc.submitted("approve")[:2] == [("request", "req-123"), ("csrf", "tok")]


def test_consent_required_scopes_cannot_be_unchecked():
    doc = check_page(consent())
    hidden_scopes = [e["value"] for e in doc.all("input", type="hidden", name="scope")]
    assert hidden_scopes == ["openid fhirUser", "launch/patient"]
    assert not doc.all("input", type="checkbox", value="openid fhirUser")
    item = next(e for e in doc.all("li") if "Know which patient record is open" in e.text)
    assert "always included" in item.text


def test_consent_narrowings_nested_and_unchecked():
    doc = check_page(consent())
    whole = doc.one("input", type="checkbox", value="patient/Observation.rs")
    item = whole.ancestors[-2]
    assert item.tag == "li"
    for scope, label in ((LAB, "Laboratory"), (VITALS, "Vital signs")):
        box = doc.one("input", type="checkbox", value=scope)
        assert "checked" not in box.attrs and box["name"] == "scope"
        assert item in box.ancestors
        fieldset = next(a for a in box.ancestors if a.tag == "fieldset" and "narrowings" in (a.get("class") or ""))
        assert "instead of all" in fieldset.text
        assert doc.label_for(box["id"]) == label


def test_consent_buttons():
    doc = check_page(consent())
    approve, deny = doc.by_id("approve"), doc.by_id("deny")
    assert (approve.tag, approve["type"], approve["name"], approve["value"], approve.text) == \
        ("button", "submit", "decision", "allow", "Allow")
    assert (deny.tag, deny["type"], deny["name"], deny["value"], deny.text) == \
        ("button", "submit", "decision", "deny", "Deny")
    assert ("decision", "deny") in doc.submitted("deny")


def test_consent_offline_disclosure():
    without = check_page(consent())
    assert "while you are away" not in without.text().replace(describe_scope("offline_access"), "")
    doc = check_page(consent(offline=True))
    notice = doc.one("section")
    assert "Access while you are away" in notice.text
    assert "for months" in notice.text and "revoke" in notice.text
    assert "Skin Check" in notice.text


def test_consent_patient_and_user_display():
    assert "Records of:" not in check_page(consent()).text()
    doc = check_page(consent(patient_display="Bobby Example (born 2015-04-01)"))
    assert "Records of: Bobby Example (born 2015-04-01)" in doc.text()
    assert "signed in as Alice Example" in doc.text()


def test_consent_escapes_everything():
    evil = [ScopeChoice('x"><script>alert(3)</script>', XSS),
            ScopeChoice('req"<i>', XSS, required=True),
            ScopeChoice("patient/Observation.rs", "obs", narrowings=(('n"<u>', XSS),))]
    markup = consent(client_name=XSS, user_display=XSS, patient_display=XSS, choices=evil, offline=True,
                     hidden={"a": '"<script>'}, action='/c?x="1"')
    assert "<script>" not in markup and "<i>" not in markup and "<u>" not in markup
    doc = check_page(markup)
    assert doc.text("h1") == f"Allow {XSS} to access your health record?"
    assert doc.text().count(XSS) >= 5
    assert doc.scopes("approve") == ['x"><script>alert(3)</script>', 'req"<i>', "patient/Observation.rs"]
    assert doc.one("input", type="checkbox", value='n"<u>')


# ---------------------------------------------------------------------------------------------- picker

def test_patient_picker():
    doc = check_page(render_patient_picker(action="/auth/patient", hidden={"request": "r1"},
                                           patients=[("p1", "Alice Example (1980-01-01)"), ("p2", XSS)]))
    radios = doc.all("input", type="radio")
    assert [(r["name"], r["value"]) for r in radios] == [("patient", "p1"), ("patient", "p2")]
    assert [doc.label_for(r["id"]) for r in radios] == ["Alice Example (1980-01-01)", XSS]
    assert doc.by_id("choose").tag == "button"
    assert doc.one("form")["action"] == "/auth/patient"
    assert ("request", "r1") in doc.submitted()


def test_patient_picker_empty_and_error():
    doc = check_page(render_patient_picker(action="/a", hidden={}, patients=[]))
    assert "No patients are available" in doc.text()
    assert not doc.all("input", type="radio")
    doc = check_page(render_patient_picker(action="/a", hidden={}, patients=[("p1", "A")], error="Choose a patient"))
    assert "Choose a patient" in next(e for e in doc.elements if e.get("role") == "alert").text


# ---------------------------------------------------------------------------------------------- error, launched

def test_error_page_escapes():
    markup = render_error(title=XSS, message="redirect_uri <b>bad</b> & not registered")
    assert "<script>" not in markup and "<b>" not in markup
    doc = check_page(markup)
    assert doc.text("h1") == XSS
    assert "redirect_uri <b>bad</b> & not registered" in doc.text()
    assert not doc.all("form")


def test_launched_page():
    url = 'https://app.example/launch?iss=https://ehr.example/fhir&launch=a"b'
    markup = render_launched(launch_url=url, app_name=XSS)
    assert "<script>" not in markup and "&amp;launch=" in markup
    doc = check_page(markup)
    link = doc.by_id("open-app")
    assert link.tag == "a" and link["href"] == url
    assert XSS in link.text


@pytest.mark.parametrize("url", ["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,x", "/relative"])
def test_launched_page_refuses_non_http_urls(url):
    with pytest.raises(ValueError):
        render_launched(launch_url=url, app_name="App")


def test_security_headers_allow_exactly_the_inline_style():
    doc = Doc.parse(login())
    digest = base64.b64encode(hashlib.sha256(doc.one("style").text.encode()).digest()).decode()
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp


# ---------------------------------------------------------------------------------------------- scope text

@pytest.mark.parametrize("scope, text", [
    ("patient/Observation.rs", "Read and search your observations"),
    ("user/*.cruds", "Create, read, update, delete and search all record types the user can access"),
    (LAB, "Read and search your observations (only category laboratory)"),
    ("patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item",
     "Read and search your conditions (only category problem-list-item)"),
    ("patient/*.read", "Read and search all your records"),
    ("patient/*.rs", "Read and search all your records"),
    ("patient/Observation.read", "Read and search your observations"),
    ("user/Observation.write", "Create, update and delete observations the user can access"),
    ("user/*.*", "Create, read, update, delete and search all record types the user can access"),
    ("patient/MedicationRequest.r", "Read your medication requests"),
    ("patient/AllergyIntolerance.rs", "Read and search your allergies and intolerances"),
    ("patient/Immunization.s", "Search your immunizations"),
    ("patient/CarePlan.c", "Create your care plans"),
    ("system/Patient.rs", "Read and search all personal details of every patient"),
    ("openid fhirUser", "Know who you are"),
    ("openid", "Know who you are"),
    ("fhirUser", "Know who you are"),
    ("launch/patient", "Know which patient record is open"),
    ("launch", "Open in the context of the current EHR session"),
    ("offline_access", "Keep access while you are away (until you revoke it)"),
    ("online_access", "Keep access while you are signed in"),
    ("launch openid", "Open in the context of the current EHR session; Know who you are"),
    ("something_else", "something_else"),
    ("patient/Observation.xyz", "patient/Observation.xyz"),  # malformed: shown as written
    ("patient/*.rs?category=x", "patient/*.rs?category=x"),
])
def test_describe_scope(scope, text):
    assert describe_scope(scope) == text
