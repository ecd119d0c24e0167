"""The indexed build must give exactly the bytes of the plain one (issue 7).

A generated corpus is built with the index (cold, unchanged, after each kind of change, after
damage to the index) and every time compared, file by file, with a fresh `--no-index` build
of the same content at the same `now`. The parallel paths are forced on for the small corpus.
Also: the fast front-matter reader against PyYAML.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import NOW, copy_site
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import builder, collector
from newsletter import index as index_module
from newsletter.builder import BuildResult, build
from newsletter.collector import content_settings, is_published, newest_first, scan
from newsletter.config import Config, load_config
from newsletter.content import _StrictLoader, decode, fast_front_matter, split_front_matter
from newsletter.errors import OutputError

FUTURE = NOW + timedelta(days=3)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class Site:
    """A copy of the corpus with its config; `check()` builds with the index and compares."""

    def __init__(self, root: Path, corpus: Path) -> None:
        self.root = root
        path = copy_site(root, content=corpus)
        # Half the corpus and short feeds keep each build quick; every article still lands in
        # some tag feed, and the label and site feeds are full.
        path.write_text(path.read_text().replace("max_items = 50", "max_items = 10"))
        self.config: Config = load_config(path)
        self.content = self.config.site.content_dir
        for extra in sorted(self.content.rglob("*.md"))[1::2]:
            extra.unlink()
        self.out = root / "public"
        self._references: dict[tuple[str, datetime], Any] = {}

    def state(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.content.rglob("*.md")):
            digest.update(path.relative_to(self.content).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def reference(self, now: datetime) -> tuple[dict[str, bytes], list[str], int, list[str]]:
        """A fresh --no-index build of the current content (cached per content and now): its
        files, published ids, article count and problems."""
        key = (self.state(), now)
        if key not in self._references:
            target = self.root / f"ref-{len(self._references)}"
            result = build(self.config, now, output_dir=target, use_index=False)
            assert result.report.written and not result.report.unchanged
            problems = [str(p) for p in result.catalog.problems]
            self._references[key] = (
                tree(target), list(result.published), len(result.catalog.articles), problems
            )
        return self._references[key]

    def check(self, now: datetime = NOW) -> BuildResult:
        result = build(self.config, now, workers=2)
        files, published, count, problems = self.reference(now)
        assert tree(self.out) == files
        assert dict(result.files.items()) == {
            rel: data for rel, data in files.items() if rel != ".newsletter-manifest"
        }
        assert list(result.published) == published
        assert len(result.catalog.articles) == count
        assert [str(p) for p in result.catalog.problems] == problems
        return result

    @property
    def index(self) -> Path:
        return self.config.site.cache_dir / builder.INDEX_FILE

    def feeds_rendered(self, result: BuildResult) -> list[str]:
        return [rel for rel in result.rendered if rel.endswith((".xml", ".json"))]


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Worker processes even for a small corpus; lists the worker functions that ran."""
    monkeypatch.setattr(collector, "PARALLEL_MIN_FILES", 50)
    monkeypatch.setattr(collector, "PARALLEL_MIN_BODIES", 20)
    monkeypatch.setattr(builder, "PARALLEL_MIN_FEEDS", 10)
    used: list[str] = []
    real_map = collector.Workers.map

    def spy(self: collector.Workers, fn: Any, *args: Any, **kwargs: Any) -> Any:
        used.append(getattr(fn, "func", fn).__name__)
        return real_map(self, fn, *args, **kwargs)

    monkeypatch.setattr(collector.Workers, "map", spy)
    return used


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (not only 2 s after their last change), so that the
    unchanged-build shortcut is exercised; every edit below comes well after the previous stat."""
    monkeypatch.setattr(collector, "_RACY_NS", -1)


@pytest.fixture
def site(tmp_path: Path, corpus_dir: Path) -> Site:
    return Site(tmp_path, corpus_dir)


def article(title: str, date: datetime, extra: str = "") -> str:
    return (
        f'---\ntitle: "{title}"\ndate: {date.isoformat()}\ntags: ["chips", "nieuw-{title}"]\n'
        f'label: "BESLISSER"\n{extra}---\n\nIntro van {title}.\n\n## Kop\nTekst.\nBron: Test\n'
    )


def newest(site: Site) -> Path:
    """The file of the newest published article: it sits in the site feed and several others."""
    catalog = scan(site.content, content_settings(site.config))
    first = newest_first(a for a in catalog.articles if is_published(a, NOW))[0]
    return site.content / first.path


def test_every_change_gives_the_bytes_of_a_plain_build(
    site: Site, parallel: list[str], trusted: None
) -> None:
    cold = site.check()
    assert cold.catalog.parsed == len(cold.catalog.articles) + len(cold.catalog.problems)
    assert parallel == ["_load_chunk", "_render_chunk", "_write_jobs"]

    again = site.check()  # nothing changed: nothing parsed, nothing rendered
    assert again.catalog.parsed == 0 and not again.rendered and not again.report.written

    target = newest(site)
    target.write_text(target.read_text(encoding="utf-8").replace("Bron:", "Extra zin.\n\nBron:"))
    edited = site.check()
    assert edited.catalog.parsed == 1
    # one feed worker pass, no body rendering: the cold build stored the bodies it rendered
    assert parallel == ["_load_chunk", "_render_chunk", "_write_jobs", "_write_jobs"]
    assert "index.xml" in edited.rendered and len(site.feeds_rendered(edited)) < 60

    # same size, other bytes: a title letter swapped
    text = target.read_text(encoding="utf-8")
    target.write_text(text.replace('title: "', 'title: "X', 1).replace("Extra zin.", "Extra zi."))
    assert site.check().catalog.parsed == 1

    (site.content / "2026" / "11" / "nieuw.md").write_text(article("nieuw", NOW - timedelta(hours=1)))
    added = site.check()
    assert added.catalog.parsed == 1 and "tags/nieuw-nieuw/index.xml" in added.rendered

    target.unlink()
    removed = site.check()
    assert removed.catalog.parsed == 0 and "index.xml" in removed.rendered

    os.utime(site.content / "2026" / "11" / "nieuw.md")  # touched, not changed
    touched = site.check()
    assert (touched.catalog.parsed, touched.catalog.rehashed) == (0, 1)
    assert touched.rendered == ["feeds.opml", "feeds.html"] and not touched.report.written

    broken = site.content / "2026" / "11" / "kapot.md"
    broken.write_text("---\ntitle: [unclosed\n---\nbody\n")
    assert [p.path for p in site.check().catalog.problems] == ["2026/11/kapot.md"]
    assert [p.path for p in site.check().catalog.problems] == ["2026/11/kapot.md"]  # from the index


def test_moving_now_past_a_publish_or_expiry_date(site: Site, trusted: None) -> None:
    folder = site.content / "2026" / "11"
    (folder / "later.md").write_text(article("later", FUTURE))
    (folder / "gone.md").write_text(
        article("gone", NOW - timedelta(days=1), f"expiryDate: {(FUTURE + timedelta(days=2)).isoformat()}\n")
    )
    site.check(NOW)
    same = site.check(NOW + timedelta(minutes=1))  # inside the window: nothing to do
    assert not same.rendered and same.catalog.parsed == 0
    published = site.check(FUTURE + timedelta(minutes=1))  # "later" goes public
    assert "tags/nieuw-later/index.xml" in published.rendered
    assert published.catalog.parsed == 0
    expired = site.check(FUTURE + timedelta(days=3))  # "gone" expires
    assert not any("nieuw-gone" in rel for rel in expired.files)
    site.check(NOW)  # and back


def test_fresh_files_are_verified_not_trusted(site: Site) -> None:
    # Every file was just copied, so every stat is in the racy window: each build re-reads
    # (hashes) them all, parses none, and still renders nothing.
    site.check()
    again = site.check()
    assert again.catalog.parsed == 0 and again.catalog.rehashed > 0
    assert site.feeds_rendered(again) == []


def _damage_lean(site: Site, how: str) -> None:
    data = site.index.read_bytes()
    if how == "truncated":
        site.index.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        site.index.write_bytes(os.urandom(len(data)))
    else:
        flipped = bytearray(data)
        flipped[-100] ^= 0x01
        site.index.write_bytes(bytes(flipped))


def _damage_db(site: Site, how: str) -> None:
    db_path = site.index.with_name(site.index.name + ".db")
    if how == "truncated-db":
        with open(db_path, "r+b") as handle:
            handle.truncate(os.path.getsize(db_path) // 3)
    elif how == "garbage-db":
        db_path.write_bytes(os.urandom(os.path.getsize(db_path)))
    else:  # one record's bytes changed in place: its digest no longer matches
        db = sqlite3.connect(db_path)
        db.execute("UPDATE records SET data = substr(data, 1, 40) || x'00' || substr(data, 42)")
        db.commit()
        db.close()


def test_damaged_index_never_gives_a_wrong_feed(site: Site, trusted: None) -> None:
    site.check()
    target = newest(site)
    original = target.read_text(encoding="utf-8")
    edited = original.replace("Bron:", "Nieuw.\n\nBron:")
    damages = ["truncated", "garbage", "bit-flip", "truncated-db", "garbage-db", "records-edited", "state"]
    for n, how in enumerate(damages):
        target.write_text(edited if n % 2 == 0 else original)  # a change, so the index is read
        if how == "state":
            for state in site.config.site.cache_dir.glob("build-*.state"):
                state.write_bytes(state.read_bytes()[:-7] + b"garbage")
        elif how.endswith("-db") or how == "records-edited":
            _damage_db(site, how)
        else:
            _damage_lean(site, how)
        site.check()
    site.check()  # and the rebuilt index is good


def test_other_version_or_settings_start_over(
    site: Site, trusted: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.check()
    monkeypatch.setattr(index_module, "__version__", "999.0")
    index_module._parser_fingerprint.cache_clear()
    try:
        other = site.check()
        assert other.catalog.parsed == len(other.catalog.articles) + len(other.catalog.problems)
    finally:
        monkeypatch.undo()
        index_module._parser_fingerprint.cache_clear()
    assert site.check().catalog.parsed > 0  # back on the real version: a foreign index again


def test_outputs_changed_behind_its_back_are_rewritten(site: Site, trusted: None) -> None:
    site.check()
    (site.out / "index.xml").write_bytes(b"tampered")
    (site.out / "tags" / "chips" / "feed.json").unlink()
    shutil.rmtree(site.out / "labels")
    result = site.check()
    assert {"index.xml", "tags/chips/feed.json"} <= set(result.report.written)


def test_a_feed_a_worker_cannot_write_fails_the_build_naming_it(
    site: Site, parallel: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    (site.out / "tags" / "chips" / "index.xml").mkdir(parents=True)  # a folder in the way
    with pytest.raises(OutputError) as caught:
        build(site.config, NOW, workers=2)
    # Raised in a worker and arrived here whole (an error that cannot be unpickled breaks the
    # pool instead, and the feeds are rendered again in this process).
    assert "_write_jobs" in parallel and "worker processes failed" not in caplog.text
    assert caught.value.path == "tags/chips/index.xml"
    assert "cannot be written" in caught.value.message


def test_a_build_elsewhere_keeps_its_own_state(site: Site, trusted: None) -> None:
    site.check()
    other = site.root / "other"
    first = build(site.config, NOW, output_dir=other, workers=1)
    assert tree(other) == site.reference(NOW)[0]
    assert set(first.report.written) == set(first.files)
    second = build(site.config, NOW, output_dir=other, workers=1)
    assert not second.rendered and tree(other) == site.reference(NOW)[0]


# --- the fast front-matter reader ------------------------------------------------------------------
def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True == 1 does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


KEYS = ["title", "date", "tags", "Draft", "x-y", "_k", "a1", "true", "TRUE", "null", "Null",
        "y", "no", "on", "cover", "image", "1a", "-a", "a b", "a:b"]
VALUES = [
    '"tekst"', '"met # hekje"', '"a: b"', "\"it's\"", '"ünïcødé ✓"', '"a\\"b"', '"\\u00e9"', '""',
    '"  spaties  "', '"a\tb"', "[]", '["a", "b"]', '[ "a" ,"b" ]', '["a",]', '["a, b", "c]"]',
    "[a, b]", "plain", "plain text", "a: b", "a:b", "a #c", "a#c", "123", "0", "007", "-5",
    "+5", "1.5", "1.", ".5", "1e5", "1.5e3", "1.5E-3", "true", "True", "TRUE", "tRUE", "false",
    "null", "NULL", "~", "no", "yes", "on", "2026-01-01", "2026-01-01T10:00:00.5Z", "12:30",
    "'single'", "|", ">", "&anchor x", "*alias", "!tag x", "", " ", "x ", "1_000", "0x1F",
    ".inf", "a\u2028b", "\u0085", "-", "- a", "? a", "@a", "`a`", "%a", "=", "<<", "v1.2.3",
]
_line = st.tuples(
    st.sampled_from(["", "", "", " ", "  ", "    "]),
    st.sampled_from(KEYS),
    st.sampled_from([":", ": ", ":  ", ":"]),
    st.sampled_from(VALUES),
).map(lambda t: f"{t[0]}{t[1]}{t[2]}{t[3] if t[2] != ':' else ''}")
_extra = st.sampled_from(["", "# comment", "  ", "---", "...", "- a", "key: value # c", "\t"])


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.one_of(_line, _line, _line, _extra), min_size=1, max_size=8))
def test_fast_front_matter_equals_pyyaml(lines: list[str]) -> None:
    fm = "\n" + "\n".join(lines) + "\n"
    fast = fast_front_matter(fm)
    if fast is None:
        return  # PyYAML decides
    slow = yaml.load(fm, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    assert same(fast, slow), (fm, fast, slow)


def test_fast_front_matter_takes_the_usual_shapes(corpus_dir: Path) -> None:
    seen = 0
    for path in sorted(corpus_dir.rglob("*.md")):
        text = decode(path.read_bytes(), path.name)
        fm = text.split("---", 2)[1]
        fast = fast_front_matter(fm)
        assert fast is not None, fm
        assert same(fast, yaml.load(fm, Loader=_StrictLoader))  # noqa: S506
        seen += 1
    assert seen >= 400
    meta, _ = split_front_matter('---\ntitle: "T"\ncover:\n  image: "x.jpg"\n---\nBody\n', "a.md")
    assert meta == {"title": "T", "cover": {"image": "x.jpg"}}

