"""Pure: checks a rendered digest against what mail clients need (standards EM-*).

Errors stop a send: HTML over 100 KB after inlining (Gmail clips at about 102 KB), an `<img>`
without alt, a relative URL, a `<style>` outside `<head>` or over 16 KB, an unreplaced placeholder,
an empty text part, a subject with a line break, and markup mail clients drop (script, SVG,
`<link>` stylesheets, base64 images, CSS variables). Warnings: a subject over 78 characters, an
`http://` link or image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import lxml.html

from .digest import RenderedDigest, personalize

HTML_LIMIT = 100 * 1024
STYLE_LIMIT = 16 * 1024
SUBJECT_WARN = 78
# What a long real value looks like, so the size check measures a mail as sent.
SAMPLE_UNSUBSCRIBE = "https://example.nl/afmelden/" + "x" * 120
SAMPLE_VIEW = "https://example.nl/bekijk/" + "x" * 120
SAMPLE_PREFERENCES = "https://example.nl/voorkeuren/" + "x" * 120
_LEFTOVER = re.compile(r"%%[A-Z][A-Z0-9_]*%%")
_ALLOWED_SCHEMES = ("https://", "http://", "mailto:", "tel:", "#")


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    audience: str
    element: str  # what is wrong, e.g. '<img src="https://...">' or "subject"
    message: str

    def __str__(self) -> str:
        return f"{self.level}: audience '{self.audience}': {self.element}: {self.message}"


def check_digest(digest: RenderedDigest) -> list[Finding]:
    """Every problem of one rendered digest, personalised with sample values first."""
    found: list[Finding] = []

    def add(level: Literal["error", "warning"], element: str, message: str) -> None:
        found.append(Finding(level, digest.audience_id, element, message))

    html, text = personalize(
        digest, name="Voorbeeld Lezer", unsubscribe_url=SAMPLE_UNSUBSCRIBE, view_url=SAMPLE_VIEW,
        preferences_url=SAMPLE_PREFERENCES,
    )
    if any(c in digest.subject for c in "\r\n"):
        add("error", "subject", "contains a line break")
    if len(digest.subject) > SUBJECT_WARN:
        add("warning", "subject", f"{len(digest.subject)} characters; clients cut it near {SUBJECT_WARN}")
    size = len(html.encode("utf-8"))
    if size > HTML_LIMIT:
        add("error", "html", f"{size / 1024:.1f} KB after inlining; Gmail clips messages over ~102 KB (limit {HTML_LIMIT // 1024} KB)")
    if not text.strip():
        add("error", "text part", "is empty")
    for part, body in (("html", html), ("text part", text)):
        for token in sorted(set(_LEFTOVER.findall(body))):
            add("error", part, f"unreplaced placeholder {token}")
    if not html.strip():
        add("error", "html", "is empty")
        return found
    root = lxml.html.document_fromstring(html)
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # comments, processing instructions
        tag = element.tag.lower()
        label = _describe(element)
        if tag == "img":
            if element.get("alt") is None:
                add("error", label, "has no alt attribute")
            if (element.get("src") or "").startswith("data:"):
                add("error", label, "is a base64 (data:) image; mail clients block these")
        if tag == "style":
            if not any(a.tag == "head" for a in element.iterancestors()):
                add("error", label, "is outside <head>; Gmail drops it")
            style_size = len((element.text or "").encode("utf-8"))
            if style_size > STYLE_LIMIT:
                add("error", label, f"{style_size / 1024:.1f} KB; Gmail ignores a <style> over 16 KB")
            if "var(--" in (element.text or ""):
                add("error", label, "uses CSS variables, which most mail clients ignore")
        if tag in ("script", "svg", "iframe", "object", "embed", "form"):
            add("error", label, "is not shown (or is stripped) by mail clients")
        if tag == "link" and "stylesheet" in (element.get("rel") or "").lower():
            add("error", label, "external stylesheets are not loaded by mail clients; inline the CSS")
        if "var(--" in (element.get("style") or ""):
            add("error", label, "uses CSS variables, which most mail clients ignore")
        for attribute in ("href", "src", "background"):
            value = (element.get(attribute) or "").strip()
            if not value or (tag == "img" and value.startswith("data:")):
                continue
            if not value.lower().startswith(_ALLOWED_SCHEMES):
                add("error", label, f"relative or unsupported URL in {attribute}: {value[:80]}")
            elif value.lower().startswith("http://"):
                add("warning", label, f"{attribute} is not https: {value[:80]}")
    return found


def _describe(element: lxml.html.HtmlElement) -> str:
    """`<img src="...">`-style label that lets an editor find the element."""
    for attribute in ("src", "href", "id", "class"):
        value = element.get(attribute)
        if value:
            return f'<{element.tag} {attribute}="{value[:60]}">'
    return f"<{element.tag}>"
