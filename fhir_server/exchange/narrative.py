"""Readable text for the consultation document: one XHTML `<div>` per section (R4 narrative.html:
txt-1 basic formatting elements only, txt-2 some content) and a whole HTML page made of them.

Every piece of text that comes from a resource goes through html.escape, so what a patient or a
clinician typed can never become markup. Nothing here logs or caches: it is patient data.
"""

from __future__ import annotations

import html
from typing import Iterable

__all__ = ["XHTML", "div", "paragraph", "bullet_list", "answer_text", "codeable_text", "html_page"]

XHTML = "http://www.w3.org/1999/xhtml"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def div(*blocks: str) -> str:
    """A narrative div around already-built (escaped) blocks; never empty (txt-2)."""
    inner = "".join(b for b in blocks if b) or "<p>None recorded.</p>"
    return f'<div xmlns="{XHTML}">{inner}</div>'


def paragraph(text: object) -> str:
    return f"<p>{esc(text)}</p>"


def bullet_list(items: Iterable[str]) -> str:
    """`items` are already-built (escaped) fragments."""
    rows = [f"<li>{item}</li>" for item in items if item]
    return f"<ul>{''.join(rows)}</ul>" if rows else ""


def labelled(label: object, value: object) -> str:
    return f"<b>{esc(label)}</b>: {esc(value)}"


def codeable_text(concept: object) -> str | None:
    """A CodeableConcept as a person reads it: its text, else a coding's display, else its code."""
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return concept["text"]
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("display"):
            return coding["display"]
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            return coding["code"]
    return None


def answer_text(answer: dict) -> str | None:
    """A QuestionnaireResponse answer's value as text (exactly what was answered, nothing added)."""
    for key, value in answer.items():
        if not key.startswith("value"):
            continue
        if key == "valueBoolean":
            return "Yes" if value else "No"
        if key == "valueCoding" and isinstance(value, dict):
            return value.get("display") or value.get("code")
        if key == "valueQuantity" and isinstance(value, dict):
            return " ".join(str(p) for p in (value.get("value"), value.get("unit") or value.get("code")) if p is not None)
        if key == "valueReference" and isinstance(value, dict):
            return value.get("display") or value.get("reference")
        if key == "valueAttachment" and isinstance(value, dict):
            return value.get("title") or "(attachment)"
        if isinstance(value, (str, int, float)):
            return str(value)
    return None


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A complete XHTML page: the title, then each section's heading and narrative div."""
    body = "".join(f"<section><h2>{esc(heading)}</h2>{narrative}</section>" for heading, narrative in sections)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'
            f'<html xmlns="{XHTML}" lang="en"><head><meta charset="utf-8"/><title>{esc(title)}</title></head>'
            f"<body><h1>{esc(title)}</h1>{body}</body></html>\n")
