"""Pure: the bytes of one article file -> `Article` (+ its Markdown body) -> sanitized HTML.

Front matter may be YAML (`---`), TOML (`+++`) or JSON (`{`). Every problem raises `ArticleError`
naming the file and the field, so the caller can report it and carry on with the other articles.
"""

from __future__ import annotations

import functools
import html
import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlparse, urlsplit, urlunparse
from zoneinfo import ZoneInfo

import nh3
import yaml
from cmarkgfm import cmark
from frontmatter.default_handlers import BaseHandler, JSONHandler, YAMLHandler

from .errors import ArticleError
from .model import Article, Cover, RenderedBody, Section


@dataclass(frozen=True)
class ContentSettings:
    """What parsing needs to know about the site."""

    base_url: str  # no trailing slash
    timezone: str = "Europe/Amsterdam"
    permalink: str = "/{dir}/{slug}/"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class ParsedArticle:
    article: Article
    body: str  # Markdown, without the closing source line


# --- YAML without YAML 1.1 surprises ---------------------------------------------------------
# PyYAML implements YAML 1.1: `no` -> False, `012345` -> 5349 (octal), `12:30` -> 750, and dates
# become date/naive datetime objects. A title or tag must never be silently changed that way, so
# this loader resolves only YAML 1.2-like booleans and decimal numbers, and leaves timestamps as
# strings that `_to_datetime` reads with the site timezone.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    pass


_DROPPED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


# The front matter of nearly every article is a handful of `key: "text"`, `key: [...]`,
# `key: plain` lines and one nested mapping (cover). Those are read here at about a tenth of
# PyYAML's cost (it was half of all parsing at 100k articles); anything else, and anything this
# reader is not sure of, goes to PyYAML. The result must equal what `_StrictLoader` gives:
# tests/test_build_equivalence.py compares the two on generated and real front matter.
# A line is `<indent><key>:` then nothing, or spaces and a value.
_FAST_HEAD = re.compile(r"( *)([A-Za-z_][A-Za-z0-9_-]*)")
_FAST_LIST = re.compile(r'\[ *((?:"[^"\\]*" *(?:, *"[^"\\]*" *)*)?)\]')
_FAST_ITEM = re.compile(r'"([^"\\]*)"')
_FAST_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]*(?: [A-Za-z0-9._+:-]+)*")
# Tabs, C1 controls, BOM and the characters YAML 1.1 counts as line breaks: left to PyYAML.
_FAST_UNSURE = re.compile("[\t\x7f-\x9f\ufeff\u2028\u2029]")
_NOT_FAST = object()


def _fast_scalar(text: str) -> Any:
    """A plain scalar resolved exactly as `_StrictLoader` resolves it, or _NOT_FAST."""
    if text.endswith(":") or ": " in text:
        return _NOT_FAST
    for tag, pattern in _StrictLoader.yaml_implicit_resolvers.get(text[0], ()):
        if pattern.match(text):
            if tag == "tag:yaml.org,2002:bool":
                return text.lower() == "true"
            if tag == "tag:yaml.org,2002:int":
                return int(text)
            if tag == "tag:yaml.org,2002:float":
                return float(text)
            if tag == "tag:yaml.org,2002:null":
                return None
            return _NOT_FAST
    return text


# What precedes the first ':' of a line repeats in every file ("title", "  image"...): each is
# resolved once per process to (indent, key), or None when the fast reader cannot take it.
_FAST_HEADS: dict[str, tuple[str, str] | None] = {}
_FAST_HEADS_MAX = 4096


def _fast_head(head: str) -> tuple[str, str] | None:
    match = _FAST_HEAD.fullmatch(head)
    name = _fast_scalar(match.group(2)) if match else None
    known = (match.group(1), name) if match and isinstance(name, str) else None
    if len(_FAST_HEADS) < _FAST_HEADS_MAX:
        _FAST_HEADS[head] = known
    return known


def _fast_value(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith('"'):
        inner = text[1:-1]  # no quote or backslash inside: two scans are cheaper than a regex
        if len(text) > 1 and text.endswith('"') and '"' not in inner and "\\" not in inner:
            return inner
        return _NOT_FAST
    if text.startswith("["):
        match = _FAST_LIST.fullmatch(text)
        return _FAST_ITEM.findall(match.group(1)) if match else _NOT_FAST
    return _fast_scalar(text) if _FAST_PLAIN.fullmatch(text) else _NOT_FAST


def fast_front_matter(fm: str) -> dict[Any, Any] | None:
    """The YAML front matter as `_StrictLoader` would load it, for the simple shapes only;
    None means: not sure, ask PyYAML."""
    if "\t" in fm or (not fm.isascii() and _FAST_UNSURE.search(fm)):
        return None
    top: dict[Any, Any] = {}
    parent = ""  # the last bare `key:` line, whose mapping may follow, indented
    nested: dict[Any, Any] = {}
    indent = ""
    for line in fm.split("\n"):
        if not line:
            continue
        head, colon, rest = line.partition(":")
        try:
            known = _FAST_HEADS[head]
        except KeyError:
            known = _fast_head(head)
        if known is None or not colon:
            return None
        if rest:
            if rest[0] != " ":
                return None
            raw: str | None = rest.lstrip(" ")
        else:
            raw = None
        spaces, name = known
        value = _fast_value(raw)
        if value is _NOT_FAST:
            return None
        if spaces:
            if not parent or (indent and spaces != indent):
                return None
            indent = spaces
            nested[name] = value
            top[parent] = nested
            continue
        parent, nested, indent = "", {}, ""
        if raw is None:
            parent = name  # null unless indented lines follow
        top[name] = value
    return top or None


class _YAML(YAMLHandler):
    # The closing boundary, matched where a line starts, as FM_BOUNDARY would match it there.
    _CLOSING = re.compile(r"-{3,}\s*$", re.MULTILINE)

    def split(self, text: str) -> tuple[str, str]:
        """FM_BOUNDARY.split (`^-{3,}\\s*$`, multiline) without scanning every character of the
        front matter for a line start (~3.6 µs a file): for the usual "---" line followed by a
        line that is not blank, the closing line is the first one starting with "---", which
        `str.find` finds; that line is matched with the same pattern. Anything else (a first
        line "----" or "---  ", a blank line after it, a "---x" line before the closing one)
        goes through the regex, so the split, and the line numbers of YAML errors, are the
        same."""
        if text.startswith("---\n") and not text[4:5].isspace():
            first = text.find("\n---", 3)
            closing = self._CLOSING.match(text, first + 1) if first >= 0 else None
            if closing is not None:
                return text[3 : first + 1], text[closing.end() :]
        return super().split(text)

    def load(self, fm: str, **kwargs: object) -> Any:
        fast = fast_front_matter(fm)
        if fast is not None:
            return fast
        return yaml.load(fm, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


class _TOML(BaseHandler):
    """python-frontmatter only reads TOML with the third-party `toml` package; use tomllib."""

    FM_BOUNDARY = re.compile(r"^\+{3,}\s*$", re.MULTILINE)
    START_DELIMITER = END_DELIMITER = "+++"

    def load(self, fm: str, **kwargs: object) -> Any:
        return tomllib.loads(fm)


_HANDLERS = (("---", "YAML", _YAML()), ("+++", "TOML", _TOML()), ("{", "JSON", JSONHandler()))

# XML 1.0 forbids these; lxml refuses them at serialisation time and one stray \x0b would
# otherwise break a whole feed.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ILLEGAL_BYTES = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
# "Bron: X", "**Bron:** X", "**Bron**: X", and the English "Source: X".
_SOURCE_LINE = re.compile(
    r"^\s*[*_]{0,2}(?:Bron|Source)[*_]{0,2}\s*:\s*[*_]{0,2}\s*(.+?)\s*$", re.I
)
_INLINE_MARKUP = re.compile(r"[*_`&<\[\\]")
# A line that may be a top-level `## ` heading (ATX, up to 3 spaces in).
_H2_LINE = re.compile(r" {0,3}##(?:[ \t]|$)")
_SLUG_SAFE = re.compile(r"^[^/\\\x00-\x1f]+$")
_SLASHES = re.compile(r"/{2,}")
# Before the query: what urlparse splits off (fragment, params), removes (tab, CR, LF) or checks
# (IPv6); in the query (kept as it is when not empty): a fragment, or what it removes.
_URL_SPLITS = re.compile(r"[#;\[\]\t\r\n]")
_QUERY_SPLITS = re.compile(r"[#\t\r\n]")


def decode(raw: bytes, path: str) -> str:
    """Bytes of a file -> text with LF line ends and no BOM; binary and non-UTF-8 are errors."""
    if b"\x00" in raw[:8192]:
        raise ArticleError(path, None, "binary file, not a Markdown article")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ArticleError(
            path, None, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # The characters XML forbids are these single bytes and U+FFFE/U+FFFF: looking for them in
    # the bytes and then in the text costs ~2 µs, the regex over the text ~30. (The two are
    # sought in the text, where a string without characters above U+00FF answers at once.)
    illegal = len(raw.translate(None, _ILLEGAL_BYTES)) != len(raw)
    if illegal or "\ufffe" in text or "\uffff" in text:
        text = _ILLEGAL_XML.sub("", text)
    return text


def _split(text: str, path: str) -> tuple[str, Any, str, str]:
    """Text -> (format name, handler, raw front matter, body), without parsing the front matter."""
    if not text.strip():
        raise ArticleError(path, None, "empty file")
    for start, name, handler in _HANDLERS:
        if not text.startswith(start):
            continue
        try:
            fm, body = handler.split(text)
        except ValueError:
            closing = "}" if start == "{" else start
            raise ArticleError(
                path, "front matter", f"{name} block has no closing '{closing}' line"
            ) from None
        return name, handler, fm, body.strip("\n")
    raise ArticleError(path, "front matter", "missing: the file must start with ---, +++ or {")


def split_front_matter(text: str, path: str) -> tuple[dict[str, Any], str]:
    """Text -> (metadata with lower-cased keys, body). A missing or empty block is an error."""
    name, handler, fm, body = _split(text, path)
    try:
        meta = handler.load(fm)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ArticleError(path, "front matter", f"invalid YAML{line}: {problem}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ArticleError(path, "front matter", f"invalid {name}: {exc}") from None
    if not isinstance(meta, dict):
        raise ArticleError(
            path, "front matter", f"must be a mapping of keys, got {type(meta).__name__}"
        )
    if not meta:
        raise ArticleError(path, "front matter", f"{name} block holds no keys")
    return _lower_keys(meta, path, ""), body


def read_body(raw: bytes, path: str) -> tuple[str, str]:
    """(Markdown body without the source line, source) of an article file, as `parse_article`
    gives them, without parsing the front matter again: for re-reading a file already indexed."""
    return _split_source(_split(decode(raw, path), path)[3])


def _lower_keys(meta: dict[Any, Any], path: str, prefix: str) -> dict[str, Any]:
    # Hugo treats front matter keys case-insensitively (publishDate == publishdate).
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            raise ArticleError(path, f"{prefix}{key}", "keys must be text")
        low = key.lower()
        if low in out:
            raise ArticleError(path, f"{prefix}{key}", "given twice (keys ignore case)")
        out[low] = _lower_keys(value, path, f"{prefix}{low}.") if isinstance(value, dict) else value
    return out


def parse_article(raw: bytes | str, path: str, settings: ContentSettings) -> ParsedArticle:
    """Parse one article file.

    Args:
        raw: the file's bytes (or already decoded text).
        path: its path relative to the content folder, POSIX separators; used in ids and errors.
        settings: site URL, timezone and permalink pattern.

    Raises:
        ArticleError: naming the path and the field that is wrong.
    """
    text = decode(raw, path) if isinstance(raw, bytes) else raw
    meta, body = split_front_matter(text, path)
    body, source = _split_source(body)
    tz = settings.tz

    title = _text(meta, "title", path, required=True)
    date_value = _first(meta, "date", "publishdate", "pubdate", "published")
    if date_value is None:
        raise ArticleError(path, "date", "is required (e.g. 2026-02-24T15:58:28Z)")
    the_date = _to_datetime(date_value, tz, path, "date")
    publish_date = _optional_date(meta, tz, path, "publishdate", "pubdate", "published")
    expiry_date = _optional_date(meta, tz, path, "expirydate", "unpublishdate")
    lastmod = _optional_date(meta, tz, path, "lastmod", "modified")
    draft = meta.get("draft", False)
    if not isinstance(draft, bool):
        raise ArticleError(path, "draft", "must be true or false", draft)

    dir_, stem = _dir_and_stem(path)
    for key in ("slug", "url"):  # checked before _text() strips control characters
        if isinstance(meta.get(key), str) and _ILLEGAL_XML.search(meta[key]):
            raise ArticleError(path, key, "must not contain control characters", meta[key])
    slug = _text(meta, "slug", path) or stem
    if not _SLUG_SAFE.match(slug) or _is_dot_segment(slug) or slug != slug.strip():
        raise ArticleError(path, "slug", "must be one path segment without / \\ or ..", slug)
    url = _permalink(meta, settings, path, dir_, slug, the_date.astimezone(tz))

    return ParsedArticle(
        article=Article(
            id=url,
            path=path,
            slug=slug,
            url=url,
            title=title,
            date=the_date,
            publish_date=publish_date,
            expiry_date=expiry_date,
            lastmod=lastmod,
            draft=draft,
            tags=_text_list(meta, "tags", path),
            labels=_text_list(meta, "labels", path) or _text_list(meta, "label", path),
            summary=_text(meta, "summary", path) or derive_summary(body),
            cover=_cover(meta.get("cover"), settings.base_url, path),
            author=_author(meta.get("author"), path),
            source=source,
        ),
        body=body,
    )


def _first(meta: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if meta.get(key) is not None:
            return meta[key]
    return None


def _optional_date(meta: dict[str, Any], tz: ZoneInfo, path: str, *keys: str) -> datetime | None:
    for key in keys:
        if meta.get(key) is not None:
            return _to_datetime(meta[key], tz, path, key)
    return None


def _to_datetime(value: Any, tz: ZoneInfo, path: str, field: str) -> datetime:
    """Any date shape -> an aware datetime. No zone or no time: read in the site timezone."""
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, date):
        result = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            result = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ArticleError(
                path, field, "is not a valid date (use 2026-02-24 or 2026-02-24T15:58:28Z)", value
            ) from None
    else:
        raise ArticleError(path, field, "must be a date", value)
    if result.tzinfo is None or result.utcoffset() is None:
        result = result.replace(tzinfo=tz)
    elif type(result.tzinfo).__module__ not in ("datetime", "zoneinfo"):
        # e.g. toml.tz.TomlTz: normalise to a plain fixed offset so output is stable.
        from datetime import timezone

        result = result.astimezone(timezone(result.utcoffset()))  # type: ignore[arg-type]
    return result


def _text(meta: dict[str, Any], field: str, path: str, required: bool = False) -> str:
    value = meta.get(field)
    if value is None:
        if required:
            raise ArticleError(path, field, "is required")
        return ""
    text = _as_text(value, path, field).strip()
    if required and not text:
        raise ArticleError(path, field, "must not be empty")
    return text


def _as_text(value: Any, path: str, field: str) -> str:
    if isinstance(value, str):
        # Escapes such as "\v" in YAML or "\u000b" in JSON bring back what decode() removed.
        # (A printable string has none of those characters: a third of the regex's cost.)
        return value if value.isprintable() else _ILLEGAL_XML.sub("", value)
    # Decimal integers round-trip exactly (the loader keeps 012345 a string); anything else
    # (true/false, 1.10, lists) would not, so it is reported rather than guessed.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ArticleError(path, field, "must be text; put the value in quotes", value)


def _text_list(meta: dict[str, Any], field: str, path: str) -> tuple[str, ...]:
    value = meta.get(field)
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = _as_text(item, path, field).strip()
        if not text:
            raise ArticleError(path, field, "holds an empty value", value)
        # `AI Hardware` and `ai hardware` are one tag: keep the first spelling.
        if text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return tuple(out)


def _author(value: Any, path: str) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        value = value.get("name", "")
    if isinstance(value, list):
        return ", ".join(_as_text(v, path, "author").strip() for v in value)
    return _as_text(value, path, "author").strip()


def _cover(value: Any, base_url: str, path: str) -> Cover | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"image": value}
    if not isinstance(value, dict):
        raise ArticleError(path, "cover", "must be a mapping with image, alt and caption", value)
    image = _text(value, "image", path).strip()
    if not image:
        raise ArticleError(path, "cover.image", "is required when cover is given")
    try:
        url, scheme = cover_url(base_url, image)
    except ValueError as exc:  # e.g. "https://[oops/x.jpg": Invalid IPv6 URL
        raise ArticleError(path, "cover.image", f"is not a valid URL ({exc})", image) from None
    if scheme not in ("http", "https"):
        raise ArticleError(path, "cover.image", "must be an http(s) URL or a site path", image)
    return Cover(image=url, alt=_text(value, "alt", path), caption=_text(value, "caption", path))


def cover_url(base_url: str, image: str) -> tuple[str, str]:
    """(`urljoin(base_url + "/", image)`, its scheme), by urljoin's own steps but with one parse
    instead of four, and none for the usual absolute http(s) image that parsing would give back
    unchanged (a cover cost 9 µs, then 4.7, now 0.5; a property test compares with urljoin).

    Raises:
        ValueError: urllib cannot parse the URL.
    """
    scheme = (
        "https" if image.startswith("https://") else "http" if image.startswith("http://") else ""
    )
    host = len(scheme) + 3
    if scheme and image[host : host + 1] not in ("", "/", "?") and image.isascii():
        head, mark, query = image.partition("?")
        if not _URL_SPLITS.search(head) and not (
            mark and (not query or _QUERY_SPLITS.search(query))
        ):
            # Nothing for urlparse to split off, drop or check: urljoin gives it back unchanged.
            return image, scheme
    parts = urlparse(image)
    if parts.scheme in ("http", "https") and parts.netloc:
        # urljoin keeps a URL of another scheme as given and re-assembles one of the base's.
        url = urlunparse(parts) if base_url.startswith(parts.scheme + ":") else image
        return url, parts.scheme
    url = urljoin(base_url + "/", image)
    return url, urlsplit(url).scheme


def _dir_and_stem(path: str) -> tuple[str, str]:
    parts = path.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    folders = parts[:-1]
    # A page bundle (foo/index.md) takes its folder's name, as in Hugo.
    if stem in ("index", "_index") and folders:
        stem = folders.pop()
    return "/".join(folders), stem


def _permalink(
    meta: dict[str, Any],
    settings: ContentSettings,
    path: str,
    dir_: str,
    slug: str,
    local: datetime,
) -> str:
    explicit = _text(meta, "url", path)
    if explicit:
        if not explicit.startswith("/") or explicit.startswith("//"):
            raise ArticleError(
                path, "url", "must be a site path starting with a single /", explicit
            )
        target = explicit
    else:
        target = settings.permalink.format(
            dir=dir_,
            slug=slug,
            year=f"{local.year:04d}",
            month=f"{local.month:02d}",
            day=f"{local.day:02d}",
        )
        if "//" in target:
            target = _SLASHES.sub("/", target)
    # Only a '.', '%', backslash or NUL can make a bad segment (the usual permalink has none).
    if ("." in target or "%" in target or "\\" in target or "\x00" in target) and any(
        _is_dot_segment(seg) or "\\" in seg or "\x00" in seg for seg in target.split("/")
    ):
        raise ArticleError(path, "url", "must not contain . or .. segments or backslashes", target)
    return settings.base_url + quote(target, safe="/-_.~%!$&'()*+,;=:@")


def _is_dot_segment(segment: str) -> bool:
    # %2e%2e is ".." to every URL parser (RFC 3986 section 2.3), so it is refused as well.
    return unquote(segment) in (".", "..")


def _split_source(body: str) -> tuple[str, str]:
    """Take the closing `Bron: X` line off the body; it often sits right under the last paragraph,
    where Markdown would otherwise merge it into that paragraph."""
    body = body.rstrip()
    cut = body.rfind("\n")  # the last line, found without splitting the whole body
    if match := _SOURCE_LINE.match(body[cut + 1 :]):
        return body[:cut].rstrip() if cut >= 0 else "", match.group(1)
    return body, ""


def derive_summary(body: str, limit: int = 240) -> str:
    """A summary for an article without one: the first paragraph as plain text, cut at a word."""
    for block in body.split("\n\n"):
        block = block.strip()
        if block and not block.startswith(("#", "```", "~~~", "<", "|", "- ", "* ", ">")):
            text = " ".join(inline_text(block).split())
            if not text:  # e.g. a paragraph that is only an image
                continue
            if len(text) <= limit:
                return text
            return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return ""


# --- Markdown -> sanitized HTML ---------------------------------------------------------------
# cmark-gfm (GitHub's C CommonMark, via cmarkgfm): CommonMark with tables and ~~strikethrough~~,
# the dialect bodies are written in, at a tenth of markdown-it-py's cost. Raw HTML is rendered
# ("unsafe") because sanitize() cleans every fragment afterwards.
_CMARK_OPTIONS = cmark.Options.CMARK_OPT_UNSAFE | cmark.Options.CMARK_OPT_STRIKETHROUGH_DOUBLE_TILDE
_CMARK_EXTENSIONS = ["table", "strikethrough"]
_URL_SCHEMES = {"http", "https", "mailto", "tel"}
# Built once: nh3.clean() builds its sanitizer on every call (5 of its 15 µs), and a body is
# cleaned a dozen times (its intro and each section apart).
_CLEANER = nh3.Cleaner(url_schemes=_URL_SCHEMES, link_rel="noopener noreferrer")
_URL_ATTR = re.compile(r'(\s(?:href|src)=")([^"]*)(")')
# Any tag, comment, processing instruction or CDATA that can reach cmark's HTML (as raw HTML).
_TAG = re.compile(
    r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>|<(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.S
)
# On its own line before a top-level `## ` heading this is an HTML block that ends at its own
# line: it interrupts any open block and closes lists and quotes as the heading would, and it
# is rendered as itself, so the HTML of one render splits there into intro and sections.
_CUT = "<!--newsletter:section-->"
_HTML_SPECIAL = re.compile("[&<>]")  # text nh3 would write otherwise (as entities, or a tag)
_MAX_CHECKS = 32


def markdown_html(markdown: str) -> str:
    """CommonMark (+ tables, strikethrough) -> HTML, unsanitized."""
    html_text: str = cmark.markdown_to_html_with_extensions(
        markdown, _CMARK_OPTIONS, _CMARK_EXTENSIONS
    )
    return html_text


def sanitize(fragment: str, page_url: str) -> str:
    """nh3-clean HTML (no script/iframe/style/on*/javascript:/data:) and make every URL absolute."""
    clean: str = _CLEANER.clean(fragment)
    if 'href="' not in clean and 'src="' not in clean:
        return clean  # most fragments: two substring tests instead of a regex pass (~4 µs)

    # nh3 serialises every attribute double-quoted, so this pattern sees each href/src exactly.
    def absolute(m: re.Match[str]) -> str:
        try:
            url = urljoin(page_url, html.unescape(m.group(2)))
        except ValueError:  # e.g. href="//[oops", which nh3 lets through as relative
            return ""  # the attribute goes, as nh3 drops a URL it cannot accept
        return m.group(1) + html.escape(url, quote=True) + m.group(3)

    return _URL_ATTR.sub(absolute, clean)


def render_body(body: str, page_url: str, source: str = "") -> RenderedBody:
    """Render a Markdown body once, keeping each top-level `## ` section addressable by its
    heading."""
    parts = _split_sections(body)
    intro_html = sanitize(parts[0], page_url)
    sections: list[Section] = []
    pieces = [intro_html]
    for part in parts[1:]:
        heading_end = part.index("</h2>\n") + len("</h2>\n")
        heading = html_text(part[len("<h2>") : heading_end]).strip()
        section_html = sanitize(part[heading_end:], page_url)
        sections.append(Section(heading=heading, anchor=slugify(heading), html=section_html))
        pieces.append(_sanitized_heading(part[:heading_end], page_url) + section_html)
    if source:
        pieces.append(f"<p>Bron: {html.escape(source, quote=False)}</p>\n")
    return RenderedBody(
        html="".join(pieces), intro_html=intro_html, sections=tuple(sections), source=source
    )


def _sanitized_heading(heading_html: str, page_url: str) -> str:
    """`sanitize` of a section's `<h2>...</h2>\n`. One of plain printable text (most headings)
    comes back from nh3 unchanged, so it is not cleaned (4 µs, a body has several)."""
    inner = heading_html[len("<h2>") : -len("</h2>\n")]
    if inner.isprintable() and not _HTML_SPECIAL.search(inner):
        return heading_html
    return sanitize(heading_html, page_url)


def _split_sections(body: str) -> list[str]:
    """The body's HTML as [intro, section, ...], each section starting with its `<h2>`."""
    lines = body.split("\n")
    # Every line that looks like one; _cut_at() weeds out those in code, lists, quotes or HTML.
    candidates = [n for n, line in enumerate(lines) if _H2_LINE.match(line)]
    if not candidates:
        return [markdown_html(body)]
    if _plainly_headings(body, lines, candidates):
        # One render, not two (most bodies; the property test compares with the whole render).
        cut_up = _cut_at(lines, candidates, _CUT, None)
        if cut_up is not None:
            return cut_up
    whole = markdown_html(body)
    cut = _CUT
    while cut in body:  # a body that quotes the marker gets a longer one
        cut = cut.replace("-->", "-x-->")
    parts = _cut_at(lines, candidates, cut, whole)
    if parts is None:
        # Some are not headings. Those whose own numbered cut comes out as a line of its own
        # right before an <h2> are (in code it is escaped, in an HTML block text follows it).
        numbered = {n: cut.replace("-->", f"-{i}-->") for i, n in enumerate(candidates)}
        tagged = markdown_html(_marked(lines, numbered))
        kept = [
            n for i, n in enumerate(candidates) if cut.replace("-->", f"-{i}-->\n<h2>") in tagged
        ]
        parts = _cut_at(lines, kept, cut, whole) if kept else None
        if parts is None:
            # A cut closed a list or an HTML comment around its line, which moves what follows:
            # each line alone then (a render each), those tagged first, at most _MAX_CHECKS.
            tagged_set = set(kept)
            order = kept + [n for n in candidates if n not in tagged_set]
            good = sorted(
                n for n in order[:_MAX_CHECKS] if _cut_at(lines, [n], cut, whole) is not None
            )
            parts = _cut_at(lines, good, cut, whole) if good else None
    return parts or [whole]


def _plainly_headings(body: str, lines: list[str], candidates: list[int]) -> bool:
    """Whether every candidate line is surely a top-level heading, so that cuts before them
    change nothing else: each starts at the margin (so no list item holds it), and the body has
    nothing such a line could sit inside: no raw HTML, no fence, and (to be safe: a title may
    run over lines) no link definition. Substring tests: a multi-line regex costs 9 µs a body."""
    if "<" in body or "```" in body or "~~~" in body or "]:" in body:
        return False
    return all(lines[n].startswith("##") for n in candidates)


def _cut_at(lines: list[str], numbers: list[int], cut: str, whole: str | None) -> list[str] | None:
    """The HTML split before the headings on these lines, or None unless each of them is a
    top-level heading: the cuts must change nothing else (checked against `whole`, the render
    without cuts, unless None) and each part must open with it."""
    parts = markdown_html(_marked(lines, dict.fromkeys(numbers, cut))).split(cut + "\n")
    if len(parts) != len(numbers) + 1 or (whole is not None and "".join(parts) != whole):
        return None
    if not all(part.startswith("<h2>") for part in parts[1:]):
        return None
    return parts


def _marked(lines: list[str], before: dict[int, str]) -> str:
    """The lines joined again, each line number in `before` preceded by a line of its marker."""
    return "\n".join(
        f"{before[n]}\n{line}" if n in before else line for n, line in enumerate(lines)
    )


def html_text(fragment: str) -> str:
    """The text of an HTML fragment made by cmark: tags dropped (so image alt text too),
    entities decoded."""
    return html.unescape(_TAG.sub("", fragment))


def inline_text(markdown: str) -> str:
    """Plain text of a line or paragraph of Markdown: `**Wat** is \\`nh3\\`?` -> `Wat is nh3?`."""
    if not _INLINE_MARKUP.search(markdown):
        return markdown  # the common case, without the cost of a parse
    return " ".join(html_text(markdown_html(markdown)).split())


@functools.lru_cache(maxsize=4096)  # feeds slugify every tag of every item: 15k calls at 10k
def slugify(text: str) -> str:
    """ASCII, lower-case, hyphenated: safe as one path segment. `AI Hardware` -> `ai-hardware`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
