"""The command line: the composition root that turns config into objects and errors into exit codes."""

from __future__ import annotations

import gc
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .cli_common import (
    EXIT_CONFIG,
    EXIT_PROBLEMS,
    _catalog,
    _load,
    _report_problems,
    config_option,
    now_option,
    parse_now,
)
from .cli_mail import plan, run, scheduled_send, send, subscribers
from .cli_web import serve
from .errors import ArticleError, ConfigError, NewsletterError

if TYPE_CHECKING:
    from .collector import Catalog
    from .config import Config
    from .emailqa import Finding


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="newsletter")
def main() -> None:
    """Turn a folder of Markdown articles into feeds and email digests."""


def console_main() -> None:
    """The `newsletter` program: `main`, then an exit without the interpreter's last garbage
    collections. Those walk every object the command made (a 10k build's catalog, articles and
    bodies: ~40 ms, 4% of the build) to find cycles that the exit frees anyway. Frozen objects
    are still released, finalized and flushed as usual; only the cycle search is skipped."""
    try:
        main()
    finally:
        gc.freeze()


@main.command()
@config_option
@click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write here instead of [site] output_dir.",
)
@now_option
@click.option("--strict", is_flag=True, help="Fail (exit 1) if any article has a problem.")
@click.option("--no-index", is_flag=True, help="Parse every file, ignoring the index cache.")
def build(
    config_path: Path, output_dir: Path | None, now_text: str | None, strict: bool, no_index: bool
) -> None:
    """Write every feed (RSS, Atom, JSON Feed), feeds.opml and feeds.html.

    Bad articles are listed and skipped; the rest is built. Exit 0 when something was built,
    1 with --strict and any problem or when nothing could be built, 2 for a config error.
    """
    from .builder import build as run_build

    config = _load(config_path)
    now = parse_now(now_text, config.site.timezone)
    try:
        result = run_build(config, now, output_dir, use_index=not no_index)
    except ConfigError as exc:  # the content folder cannot be read
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except NewsletterError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
    catalog, report = result.catalog, result.report
    if catalog.problems:
        verb = "failed on" if strict else "skipped"
        click.echo(f"{verb} {len(catalog.problems)} article(s) with problems:", err=True)
        _report_problems(catalog.problems)
    feeds = sum(1 for rel in result.files if rel.endswith((".xml", ".json")))
    click.echo(
        f"built {feeds} feeds from {len(result.published)} published of "
        f"{len(catalog.articles)} articles into {output_dir or config.site.output_dir}: "
        f"{len(report.written)} written, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed"
    )
    if strict and catalog.problems:
        sys.exit(EXIT_PROBLEMS)


@main.command()
@click.argument("audience_id", metavar="[AUDIENCE]", required=False)
@config_option
@now_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the preview files (default: preview/ beside config.toml).",
)
def digest(audience_id: str | None, config_path: Path, now_text: str | None, out_dir: Path | None) -> None:
    """Write this issue's digest of AUDIENCE (default: every audience) for preview.

    Per audience: OUT/AUDIENCE/digest.html, digest.txt and digest.eml (the complete message a
    subscriber would receive, with sample personal values). The issue covers the audience's
    look-back window up to --now. Exit 1 if a digest cannot be rendered.
    """
    from .campaign import digest_settings, plan_issue, render_issue, write_preview
    config = _load(config_path)
    now = parse_now(now_text, config.site.timezone)
    try:
        audiences = [config.audience(audience_id)] if audience_id else list(config.audiences)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if not audiences:
        click.echo("error: no [[audiences]] in the config", err=True)
        sys.exit(EXIT_CONFIG)
    catalog = _catalog(config)
    if catalog.problems:
        click.echo(f"skipped {len(catalog.problems)} article(s) with problems:", err=True)
        _report_problems(catalog.problems)
    settings = digest_settings(config)
    target = out_dir or config.path.parent / "preview"
    failed = False
    for audience in audiences:
        plan = plan_issue(audience, catalog.articles, now)
        if plan.empty:
            click.echo(f"{audience.id}: no articles published in the last {audience.window}; nothing to preview")
            continue
        try:
            rendered = render_issue(plan, catalog.rendered, settings)
            files = write_preview(config, audience, rendered, target / audience.id, now)
        except NewsletterError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        click.echo(f"{audience.id}: {len(plan.articles)} article(s), subject {rendered.subject!r}")
        for path in files:
            click.echo(f"  {path}")
    catalog.save_index()
    if failed:
        sys.exit(EXIT_PROBLEMS)


@main.command()
@config_option
@now_option
def check(config_path: Path, now_text: str | None) -> None:
    """Validate config.toml and every article; list all problems. Exit 1 if there are any."""
    from .collector import is_published

    config = _load(config_path)
    now = parse_now(now_text, config.site.timezone)
    catalog = _catalog(config)
    problems = list(catalog.problems)
    published = [a for a in catalog.articles if is_published(a, now)]
    for article in published:  # render too: a body that cannot be rendered is a problem
        try:
            catalog.rendered(article)
        except NewsletterError as exc:
            problems.append(ArticleError(article.path, "body", str(exc)))
        except Exception as exc:  # noqa: BLE001 - report, never hide, an unexpected failure
            problems.append(ArticleError(article.path, "body", f"cannot be rendered: {exc}"))
    catalog.save_index()
    findings = _email_findings(config, catalog, now)
    drafts = sum(1 for a in catalog.articles if a.draft)
    future = sum(1 for a in catalog.articles if not a.draft and a.published > now)
    click.echo(
        f"{len(catalog.articles) + len(catalog.problems)} files: {len(published)} published, "
        f"{drafts} draft, {future} scheduled for later, {len(problems)} with problems"
    )
    if not published:
        click.echo("error: no published articles", err=True)
    if problems:
        _report_problems(problems)
    for finding in findings:
        click.echo(f"  {finding}", err=True)
    errors = [f for f in findings if f.level == "error"]
    if problems or not published or errors:
        sys.exit(EXIT_PROBLEMS)


def _email_findings(config: Config, catalog: Catalog, now: datetime) -> list[Finding]:
    """QA of every audience's digest as it would go out at `now`; a render failure is a finding."""
    from .campaign import digest_settings, plan_issue, render_issue
    from .emailqa import Finding, check_digest

    settings = digest_settings(config)
    findings: list[Finding] = []
    for audience in config.audiences:
        plan = plan_issue(audience, catalog.articles, now)
        if plan.empty:
            click.echo(f"audience '{audience.id}': no new articles in the last {audience.window}")
            continue
        try:
            digest = render_issue(plan, catalog.rendered, settings)
        except NewsletterError as exc:
            findings.append(Finding("error", audience.id, "digest", str(exc)))
            continue
        found = check_digest(digest)
        errors = sum(1 for f in found if f.level == "error")
        click.echo(
            f"audience '{audience.id}': digest of {len(plan.articles)} article(s), "
            f"{len(digest.html.encode()) // 1024} KB, {errors} error(s), {len(found) - errors} warning(s)"
        )
        findings += found
    return findings


for command in (subscribers, send, plan, run, serve, scheduled_send):
    main.add_command(command)
