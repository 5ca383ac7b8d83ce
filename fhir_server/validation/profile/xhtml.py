"""The narrative rules txt-1 and txt-2 (R4 narrative.html), checked natively.

fhirpathpy has no `htmlChecks()` (validation.md §A3.9), so `Narrative.div` is checked here:

- txt-1: the div is well-formed XHTML in the XHTML namespace, rooted at `<div>`, using only the
  basic formatting elements of HTML 4.0 chapters 7-11 and 15 plus `<a>` and `<img>` (R4
  narrative.html "only the basic html formatting elements and attributes ... no active content"),
  with no scripts or event handler attributes and no `javascript:` links;
- txt-2: the div has some non-whitespace content (text or an image).

The parse refuses DOCTYPE and entity declarations outright, so a narrative cannot expand
entities (no "billion laughs", no external entities). Nothing is cached: narratives are patient data.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

__all__ = ["narrative_ok", "narrative_has_content"]

_XHTML = "{http://www.w3.org/1999/xhtml}"

# HTML 4.0 chapters 7-11 (structure, text, lists, tables) and 15 (alignment, font styles) plus a/img,
# as the R4 narrative page allows; the same set the reference validator accepts.
_ELEMENTS = frozenset(
    {
        "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong",
        "small", "big", "tt", "small", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr",
        "address", "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt", "dd", "pre", "table",
        "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td", "code", "samp",
        "img", "map", "area", "ins", "del", "center", "font", "u", "s", "strike", "basefont",
    }
)


def _parse(div: str) -> ElementTree.Element | None:
    if "<!" in div.replace("<!--", ""):  # DOCTYPE / ENTITY / CDATA declarations are not narrative
        return None
    try:
        return ElementTree.fromstring(div)
    except ElementTree.ParseError:
        return None


def narrative_ok(div: object) -> bool:
    """txt-1: well-formed XHTML, `<div>` root in the XHTML namespace, allowed elements only."""
    if not isinstance(div, str):
        return True  # nothing to check (a `_div` extension only): ele-1's business
    root = _parse(div)
    if root is None or root.tag != f"{_XHTML}div":
        return False
    for element in root.iter():
        tag = element.tag
        if not isinstance(tag, str) or not tag.startswith(_XHTML) or tag[len(_XHTML):] not in _ELEMENTS:
            return False
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            if local.startswith("on"):
                return False
            if local in ("href", "src") and value.strip().lower().startswith(("javascript:", "vbscript:")):
                return False
    return True


def narrative_has_content(div: object) -> bool:
    """txt-2: some non-whitespace text, or an image."""
    if not isinstance(div, str):
        return True
    root = _parse(div)
    if root is None:
        return True  # txt-1 reports the malformed narrative; one failure is enough
    for element in root.iter():
        if element.tag == f"{_XHTML}img":
            return True
        if (element.text and element.text.strip()) or (element.tail and element.tail.strip() and element is not root):
            return True
    return False
