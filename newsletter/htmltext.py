"""Sanitized HTML fragment -> readable plain text (for text/plain mail parts).

Depends on the standard library only, so the data model can use it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK_TAGS = {
    "p", "div", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
    "table", "hr", "dl", "section", "article", "figure", "figcaption", "header", "footer",
}  # fmt: skip
_LINE_TAGS = {"li", "tr", "dt", "dd", "br"}
_SKIP_TAGS = {"script", "style", "template", "head", "title"}
_PARA = "\x00"
_LINE = "\x01"


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[tuple[str | None, int]] = []  # (href, index in out) of open <a>
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.out.append(_PARA)
            if tag == "pre":
                self.pre += 1
        elif tag == "li":
            self.out.append(_LINE + "- ")
        elif tag in _LINE_TAGS:
            self.out.append(_LINE)
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "a":
            href = dict(attrs).get("href")
            keep = href if href and href.startswith(("https://", "http://")) else None
            self.links.append((keep, len(self.out)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self.out.append(_LINE if tag == "br" else _PARA)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append(_PARA)
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.out[start:]).strip()
            if href and href != label:
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            self.out.append(data.replace("\n", _LINE))
        else:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(fragment: str) -> str:
    """Readable plain text of a sanitized HTML fragment: paragraphs, "- " list items, links as
    "label (url)", no tags, entities decoded."""
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    paragraphs = []
    for block in "".join(parser.out).split(_PARA):
        lines = [" ".join(line.split()) for line in block.split(_LINE)]
        text = "\n".join(line for line in lines if line)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)
