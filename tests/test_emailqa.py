"""emailqa.py: each mail-client rule triggered by a crafted article or site template, and the
sample site's digests passing them all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import NOW, REPO
from test_digest import ISSUE, LEAD, SETTINGS, article, render

from newsletter.campaign import digest_settings, plan_issue, render_issue
from newsletter.collector import load_catalog
from newsletter.config import load_config
from newsletter.digest import RenderedDigest
from newsletter.emailqa import Finding, check_digest


def errors(findings: list[Finding]) -> list[str]:
    return [f"{f.element}: {f.message}" for f in findings if f.level == "error"]


def site_template(tmp_path: Path, html: str | None = None, txt: str | None = None) -> Path:
    """A site templates folder overriding digest.html/.txt by extending the built-in ones."""
    folder = tmp_path / "email"
    folder.mkdir(exist_ok=True)
    if html is not None:
        (folder / "digest.html").write_text(html, encoding="utf-8")
    if txt is not None:
        (folder / "digest.txt").write_text(txt, encoding="utf-8")
    return folder


def with_templates(tmp_path: Path, **templates: str) -> RenderedDigest:
    return render(ISSUE, site=replace(SETTINGS, templates_dir=site_template(tmp_path, **templates)))


def test_the_default_digest_is_clean() -> None:
    assert check_digest(render(ISSUE)) == []


@pytest.mark.parametrize("audience", ["beslissers", "bouwers", "onderzoekers"])
def test_every_sample_audience_passes(audience: str) -> None:
    config = load_config(REPO / "config.toml")
    catalog = load_catalog(config, use_index=False)
    plan = plan_issue(config.audience(audience), catalog.articles, NOW)
    assert plan.articles, f"the sample site has no {audience} articles in the window"
    assert check_digest(render_issue(plan, catalog.rendered, digest_settings(config))) == []


def test_a_huge_article_section_makes_the_html_too_big() -> None:
    paragraph = "Een heel lange alinea over rekenkracht en stroomnetten. " * 40
    body = "Intro.\n\n## Wat kun je hier morgen mee?\n" + "\n\n".join([paragraph] * 60)
    huge = article("2026/11/lang.md", title="Lang", body=body + "\n\nBron: X\n")
    found = errors(check_digest(render([huge])))
    assert any(e.startswith("html: ") and "KB after inlining" in e for e in found), found


def test_an_image_without_alt_is_named(tmp_path: Path) -> None:
    html = (
        '{% extends "default/digest.html" %}{% block header %}{{ super() }}'
        '<img src="https://example.nl/logo.png" width="100">{% endblock %}'
    )
    digest = with_templates(tmp_path, html=html)
    assert '<img src="https://example.nl/logo.png">: has no alt attribute' in errors(
        check_digest(digest)
    )


def test_relative_urls_and_http_are_reported(tmp_path: Path) -> None:
    html = (
        '{% extends "default/digest.html" %}{% block header %}{{ super() }}'
        '<a href="/archief">archief</a><img src="http://example.nl/x.png" alt="x" width="1">'
        "{% endblock %}"
    )
    findings = check_digest(with_templates(tmp_path, html=html))
    assert '<a href="/archief">: relative or unsupported URL in href: /archief' in errors(findings)
    assert any(f.level == "warning" and "not https" in f.message for f in findings)


def test_style_outside_head_and_css_variables(tmp_path: Path) -> None:
    html = (
        '{% extends "default/digest.html" %}{% block header %}{{ super() }}'
        "<style>.x { color: var(--brand) }</style>{% endblock %}"
    )
    found = errors(check_digest(with_templates(tmp_path, html=html)))
    assert any("outside <head>" in e for e in found), found
    assert any("CSS variables" in e for e in found), found


def test_an_oversized_head_style(tmp_path: Path) -> None:
    # A site digest.css (overriding the built-in one) with a large @media block, which premailer
    # must keep in the head.
    rules = "".join(f".r{i} {{ color: #123456 !important; padding: 1px 2px 3px 4px; }}\n" for i in range(400))
    folder = site_template(tmp_path)
    (folder / "digest.css").write_text(f"@media (max-width: 600px) {{ {rules} }}", encoding="utf-8")
    found = errors(check_digest(render(ISSUE, site=replace(SETTINGS, templates_dir=folder))))
    assert any("Gmail ignores a <style> over 16 KB" in e for e in found), found


def test_unreplaced_placeholders_and_empty_text(tmp_path: Path) -> None:
    html = '{% extends "default/digest.html" %}{% block header %}{{ super() }}%%FIRSTNAME%%{% endblock %}'
    findings = errors(check_digest(with_templates(tmp_path, html=html, txt="\n")))
    assert "html: unreplaced placeholder %%FIRSTNAME%%" in findings
    assert "text part: is empty" in findings


def test_markup_mail_clients_drop(tmp_path: Path) -> None:
    html = (
        '{% extends "default/digest.html" %}{% block header %}{{ super() }}'
        '<svg width="1"></svg><link rel="stylesheet" href="https://example.nl/x.css">'
        '<img src="data:image/png;base64,AAAA" alt="x" width="1">{% endblock %}'
    )
    found = errors(check_digest(with_templates(tmp_path, html=html)))
    assert any(e.startswith("<svg") for e in found), found
    assert any("external stylesheets" in e for e in found), found
    assert any("base64" in e for e in found), found


def test_subject_rules() -> None:
    digest = render([LEAD])
    long = replace(digest, subject="x" * 90)
    assert [f.message for f in check_digest(long)] == ["90 characters; clients cut it near 78"]
    broken = replace(digest, subject="Week 48\r\nBcc: iedereen@example.nl")
    assert "subject: contains a line break" in errors(check_digest(broken))


def test_findings_name_the_audience() -> None:
    finding = check_digest(replace(render([LEAD]), subject="x" * 90))[0]
    assert str(finding) == "warning: audience 'beslissers': subject: 90 characters; clients cut it near 78"
