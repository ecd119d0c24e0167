#!/usr/bin/env python3
"""Benchmark the e-mail digest: render + inline one issue, and personalize it per recipient.

    python bench/digest.py [--sizes 10,30] [--runs 7] [--recipients 10000]

Articles come from ../shared/tools/make_corpus.py (200 articles, seed 1) in a temporary folder,
parsed with `content.parse_article`; an issue of N articles is the N newest non-draft ones.
`render_digest` is timed whole (Jinja + article bodies for the highlight boxes + premailer),
and premailer's part alone by running `inline_css` on the very document `render_digest` passed
to it. The first call (template compile, premailer import) is left out of the figures.
`personalize` is what runs once per subscriber: each of --recipients calls (distinct names and
URLs) is timed on its own; its median, as a share of the inlining it replaces, should stay < 1%
(standards PM-04, PM-08). The premailer import is timed in fresh interpreters.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter import digest as digest_module
from newsletter.content import ContentSettings, ParsedArticle, parse_article, render_body
from newsletter.digest import AudienceSpec, DigestSettings, RenderedDigest, personalize

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAKE_CORPUS = REPO.parent / "shared" / "tools" / "make_corpus.py"
AMS = ZoneInfo("Europe/Amsterdam")
START = datetime(2026, 11, 23, tzinfo=AMS)
END = datetime(2026, 11, 30, tzinfo=AMS)
CONTENT = ContentSettings(base_url="https://bench.example.nl")
SETTINGS = DigestSettings(
    site_title="Bench",
    site_url="https://bench.example.nl",
    sender_line="Bench · Postbus 1 · 1000 AA Amsterdam",
)
AUDIENCE = AudienceSpec(
    id="beslissers",
    title="Voor beslissers",
    description="Het belangrijkste AI-nieuws van de week, voor wie beslist.",
    highlight_section="Wat kun je hier morgen mee?",
    utm={"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "beslissers"},
)
IMPORT_PREMAILER = (
    "import time; t = time.perf_counter(); import premailer; print(time.perf_counter() - t)"
)


def load_articles(count: int = 200) -> list[ParsedArticle]:
    """make_corpus.py into a temporary folder, parsed; non-drafts, newest first."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "content"
        made = subprocess.run(
            [sys.executable, str(MAKE_CORPUS), str(out), "--count", str(count), "--seed", "1",
             "--end", "2026-11-28"],
            capture_output=True, text=True,
        )
        if made.returncode != 0:
            raise SystemExit(f"{MAKE_CORPUS} failed:\n{made.stderr}")
        parsed = [
            parse_article(path.read_bytes(), path.relative_to(out).as_posix(), CONTENT)
            for path in sorted(out.rglob("*.md"))
        ]
    live = [p for p in parsed if not p.article.draft]
    return sorted(live, key=lambda p: p.article.published, reverse=True)


def render(issue: Sequence[ParsedArticle]) -> RenderedDigest:
    bodies = {p.article.id: p.body for p in issue}
    return digest_module.render_digest(
        AUDIENCE,
        [p.article for p in issue],
        lambda a: render_body(bodies[a.id], a.url, a.source),
        START,
        END,
        SETTINGS,
    )


def timed(call: Callable[[], object], runs: int) -> list[float]:
    """Seconds per call, `runs` calls after one untimed warm-up call."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def raw_document(issue: Sequence[ParsedArticle]) -> str:
    """The HTML that render_digest hands to inline_css (captured, not re-rendered by hand)."""
    captured: list[str] = []
    real = digest_module.inline_css

    def capture(document: str, name: str = "html") -> str:
        captured.append(document)
        return real(document, name)

    digest_module.inline_css = capture
    try:
        render(issue)
    finally:
        digest_module.inline_css = real
    return captured[0]


def personalize_cost(digest: RenderedDigest, recipients: int) -> list[float]:
    """Seconds per `personalize` call, one call per (distinct) recipient."""
    people = [
        (f"Lezer {i} van den Berg", f"https://bench.example.nl/afmelden/?t={i:08x}c2FtcGxl",
         f"https://bench.example.nl/archief/2026-48/beslissers/?s={i}")
        for i in range(recipients)
    ]
    personalize(digest, name=people[0][0], unsubscribe_url=people[0][1], view_url=people[0][2])
    times = []
    clock = time.perf_counter
    for name, unsubscribe_url, view_url in people:
        start = clock()
        personalize(digest, name=name, unsubscribe_url=unsubscribe_url, view_url=view_url)
        times.append(clock() - start)
    return times


def ms(values: list[float]) -> str:
    low, mid, high = (v * 1e3 for v in (min(values), statistics.median(values), max(values)))
    return f"{mid:6.1f} ms ({low:.1f}-{high:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,30", help="articles per issue, comma-separated")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here (bench/run.py)")
    args = parser.parse_args()
    results: dict[str, object] = {"runs": args.runs, "issues": []}
    sizes = [int(s) for s in args.sizes.split(",")]

    imports = [
        float(subprocess.run([sys.executable, "-c", IMPORT_PREMAILER], check=True,
                             capture_output=True, text=True).stdout)
        for _ in range(args.runs)
    ]
    print(f"premailer import (fresh interpreter, {args.runs} runs): {ms(imports)}")
    results["premailer_import_s"] = imports

    articles = load_articles()
    if len(articles) < max(sizes):
        raise SystemExit(f"only {len(articles)} articles, need {max(sizes)}")
    print(f"median (min-max) of {args.runs} runs after one warm-up; "
          f"personalize: median of {args.recipients} calls, one per recipient")
    print(f"{'articles':>8} | {'render+inline':>22} | {'inline only':>22} | {'HTML':>8} | "
          f"{'personalize':>11} | {'/ render+inline':>15} | {'/ inline':>8}")
    for size in sizes:
        issue = articles[:size]
        digest = render(issue)
        document = raw_document(issue)
        total = timed(functools.partial(render, issue), args.runs)
        inline = timed(functools.partial(digest_module.inline_css, document), args.runs)
        per_recipient = statistics.median(personalize_cost(digest, args.recipients))
        html_kb = len(digest.html.encode("utf-8")) / 1024
        results["issues"].append(  # type: ignore[attr-defined]
            {"articles": size, "render_s": total, "inline_s": inline, "html_kb": html_kb,
             "personalize_s": per_recipient}
        )
        print(
            f"{size:>8} | {ms(total):>22} | {ms(inline):>22} | {html_kb:5.1f} KB | "
            f"{per_recipient * 1e6:8.1f} µs | {per_recipient / statistics.median(total):>15.3%} | "
            f"{per_recipient / statistics.median(inline):>8.3%}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
