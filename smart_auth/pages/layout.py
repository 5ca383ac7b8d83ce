"""The page shell every authorization-server page shares: HTML5 head, one inline stylesheet, escaping.

No external assets and no scripts: the pages work with scripting off, and SECURITY_HEADERS can
forbid everything but this one stylesheet (allowed by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import html


def esc(value: object) -> str:
    """Escape for element text and double-quoted attribute values alike."""
    return html.escape(str(value), quote=True)


CSS = """\
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#eef0f3}
main{max-width:34rem;margin:2rem auto;padding:1.5rem 1.75rem;background:#fff;border:1px solid #c9ced6;border-radius:8px}
h1{font-size:1.5rem;line-height:1.25;margin:0 0 1rem}
h2{font-size:1.125rem;margin:0 0 .5rem}
p{margin:0 0 1rem}
a{color:#0b4f9c}
label,legend{font-weight:600}
fieldset{border:0;padding:0;margin:0 0 1rem;min-width:0}
legend{padding:0;margin-bottom:.5rem}
input[type=text],input[type=password]{display:block;width:100%;margin:.25rem 0 1rem;padding:.5rem .625rem;\
font:inherit;color:inherit;border:2px solid #5b6270;border-radius:4px}
input[aria-invalid=true]{border-color:#b3261e}
input[type=checkbox],input[type=radio]{width:1.25rem;height:1.25rem;margin:.15rem 0 0;flex:none;accent-color:#0b4f9c}
button{font:inherit;font-weight:600;padding:.5rem 1.5rem;border:2px solid #0b4f9c;border-radius:4px;\
background:#0b4f9c;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#0b4f9c}
:focus-visible{outline:3px solid #1b1b1b;outline-offset:2px}
.error{border:2px solid #b3261e;border-left-width:6px;padding:.75rem 1rem;margin:0 0 1rem}
.error h2{color:#b3261e}
.error p{margin:0}
.app{padding:.75rem 1rem;background:#f4f6f9;border-radius:4px}
.muted,.hint{color:#4a5160}
.hint{font-size:.9375rem;margin:0 0 .5rem}
.options{list-style:none;padding:0;margin:0}
.options>li{padding:.5rem 0;border-top:1px solid #e1e4e9}
.options>li:last-child{border-bottom:1px solid #e1e4e9}
.check{display:flex;gap:.625rem;align-items:flex-start}
.check label{font-weight:400}
.fixed .mark{display:inline-block;width:1.25rem;color:#1e6b35;font-weight:700}
.narrowings{margin:.5rem 0 0 1.875rem;padding:.5rem 0 .25rem .75rem;border-left:3px solid #c9ced6}
.narrowings legend{font-weight:400;font-style:italic}
.narrowings .check+.check{margin-top:.25rem}
.notice{border:2px solid #8a5a00;background:#fff8e6;border-radius:4px;padding:.75rem 1rem;margin:0 0 1rem}
.notice p{margin:0}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin:1.25rem 0 0}
@media (max-width:36rem){main{margin:0;border:0;border-radius:0;padding:1.25rem 1rem}}
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

# Headers the endpoints serving these pages should send. The CSP allows nothing but the inline
# stylesheet above (by hash): no scripts, no images, no framing (clickjacking on the consent page).
# No form-action: Chrome applies it to the redirect after a POST, which here goes to the app.
SECURITY_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page(title: str, body: str) -> str:
    """A complete HTML5 document; `title` is plain text, `body` is markup that goes inside <main>."""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="same-origin">\n'
        f"<title>{esc(title)}</title>\n"
        f"<style>{CSS}</style>\n"
        "</head>\n<body>\n<main>\n"
        f"{body}"
        "</main>\n</body>\n</html>\n"
    )


def hidden_inputs(hidden: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">\n' for k, v in hidden.items())


def error_summary(error: str | None, *, heading: str = "There is a problem") -> str:
    """The role=alert box at the top of a form; empty when there is no error."""
    if not error:
        return ""
    return (f'<div class="error" role="alert" id="error-summary">\n<h2>{esc(heading)}</h2>\n'
            f"<p>{esc(error)}</p>\n</div>\n")
