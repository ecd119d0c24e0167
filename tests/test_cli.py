"""The CLI end to end, on copies of the sample site: exit codes, reports, determinism."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import copy_site

from newsletter.cli import main

NOW = "2026-11-28T09:00"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_build_then_rebuild_rewrites_nothing(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    code, out, err = run("build", "--config", str(config), "--now", NOW)
    assert code == 0, err
    assert "0 unchanged" in out and not err
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "public").rglob("*") if p.is_file()}
    code, out, _ = run("build", "--config", str(config), "--now", NOW)
    assert code == 0 and " 0 written" in out
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}


def test_index_and_no_index_give_identical_bytes(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    assert run("build", "--config", str(config), "--now", NOW, "--output", str(tmp_path / "a"))[0] == 0
    # the second build uses the index written by the first; the third parses everything
    assert run("build", "--config", str(config), "--now", NOW, "--output", str(tmp_path / "b"))[0] == 0
    assert run("build", "--config", str(config), "--now", NOW, "--no-index", "--output", str(tmp_path / "c"))[0] == 0
    a, b, c = ({p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()} for d in (tmp_path / "a", tmp_path / "b", tmp_path / "c"))
    assert a == b == c and len(a) > 40


def test_bad_article_is_skipped_and_listed_strict_fails(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    bad = tmp_path / "content" / "2026" / "11" / "kapot.md"
    bad.write_text("---\ntitle: [unclosed\n---\nbody\n", encoding="utf-8")
    code, out, err = run("build", "--config", str(config), "--now", NOW)
    assert code == 0
    assert "2026/11/kapot.md: front matter: invalid YAML" in err
    assert "from 12 published of 14 articles" in out
    code, _, err = run("build", "--config", str(config), "--now", NOW, "--strict")
    assert code == 1 and "kapot.md" in err


def test_unparseable_urls_cost_one_article_or_one_link_not_the_build(tmp_path: Path) -> None:
    # Regression: urllib's ValueError ("Invalid IPv6 URL") for a cover image or a raw-HTML link
    # escaped as a traceback and no feed was written at all.
    config = copy_site(tmp_path)
    folder = tmp_path / "content" / "2026" / "11"
    (folder / "kapot.md").write_text(
        '---\ntitle: Kapot\ndate: 2026-11-27T10:00:00Z\ncover:\n  image: "https://[oops/x.jpg"\n---\nB\n',
        encoding="utf-8",
    )
    (folder / "link.md").write_text(
        '---\ntitle: Met link\ndate: 2026-11-27T11:00:00Z\n---\nZie <a href="//[oops">hier</a>.\n',
        encoding="utf-8",
    )
    code, out, err = run("build", "--config", str(config), "--now", NOW)
    assert code == 0
    assert "2026/11/kapot.md: cover.image: is not a valid URL" in err
    assert "from 13 published of 15 articles" in out
    feed = (tmp_path / "public" / "index.xml").read_text(encoding="utf-8")
    assert "Met link" in feed and "hier" in feed and "[oops" not in feed


def test_check_lists_every_problem(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    folder = tmp_path / "content" / "2026" / "11"
    (folder / "geen-titel.md").write_text("---\ndate: 2026-11-01\n---\nx\n")
    (folder / "datum.md").write_text("---\ntitle: x\ndate: 2026-02-30\n---\nx\n")
    code, out, err = run("check", "--config", str(config), "--now", NOW)
    assert code == 1
    assert "2026/11/geen-titel.md: title: is required" in err
    assert "2026/11/datum.md: date: is not a valid date" in err
    assert "2 with problems" in out and "1 draft" in out and "1 scheduled for later" in out
    (folder / "geen-titel.md").unlink()
    (folder / "datum.md").unlink()
    code, out, _ = run("check", "--config", str(config), "--now", NOW)
    assert code == 0 and "0 with problems" in out


def test_nothing_published_is_a_failure(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    code, _, err = run("build", "--config", str(config), "--now", "2000-01-01T00:00")
    assert code == 1 and "no published articles" in err


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    config = copy_site(tmp_path, extra="")
    config.write_text(config.read_text().replace("max_items = 50", "max_itmes = 50"))
    code, _, err = run("build", "--config", str(config))
    assert code == 2 and "feeds.max_itmes" in err and "max_items" in err
    code, _, err = run("check", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "not found" in err


@pytest.mark.parametrize(
    "command",
    [["build", "--now"], ["check", "--now"], ["digest", "--now"], ["plan", "--at"], ["send", "beslissers", "--now"]],
    ids=lambda c: c[0],
)
def test_a_missing_content_folder_is_a_config_error_not_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    config = copy_site(tmp_path)
    shutil.rmtree(tmp_path / "content")
    code, _, err = run(*command, NOW, "--config", str(config))
    assert code == 2, err
    assert err.startswith("error: config key 'site.content_dir': cannot be read: No such file")
    assert str(tmp_path / "content") in err


def test_bad_now_is_rejected(tmp_path: Path) -> None:
    code, _, err = run("build", "--config", str(copy_site(tmp_path)), "--now", "gisteren")
    assert code == 2 and "--now" in err


def test_console_script_runs_in_a_fresh_process(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "build", "--config", str(config), "--now", NOW],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "public" / "labels" / "beslisser" / "atom.xml").exists()


# --- digest preview and email QA ---------------------------------------------------------------
def test_digest_writes_a_preview_per_audience(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    code, out, err = run("digest", "--config", str(config), "--now", NOW)
    assert code == 0, err
    for audience in ("beslissers", "bouwers", "onderzoekers"):
        folder = tmp_path / "preview" / audience
        html = (folder / "digest.html").read_text(encoding="utf-8")
        text = (folder / "digest.txt").read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>") and "%%" not in html and "%%" not in text
        assert "Voorbeeld Lezer" in html and "/unsubscribe/VOORBEELD" in text
        assert f"{audience}:" in out
        # the .eml is the complete message, and its parts are exactly the two preview files
        message = email.message_from_bytes((folder / "digest.eml").read_bytes(), policy=email.policy.default)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Id"].endswith(f"<{audience}.ai-nieuws.example.nl>")
        assert message["To"] == "Voorbeeld Lezer <voorbeeld.lezer@example.nl>"
        plain, rich = message.get_payload()
        assert plain.get_content_type() == "text/plain" and rich.get_content_type() == "text/html"
        assert plain.get_content().replace("\r\n", "\n") == text
        assert rich.get_content().replace("\r\n", "\n") == html.replace("\r\n", "\n")
    code, out, err = run("digest", "beslissers", "--config", str(config), "--now", NOW, "--out", str(tmp_path / "p"))
    assert code == 0 and sorted(p.name for p in (tmp_path / "p").iterdir()) == ["beslissers"]


def test_digest_is_deterministic(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    for out in ("a", "b"):
        assert run("digest", "--config", str(config), "--now", NOW, "--out", str(tmp_path / out))[0] == 0
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert a == b and len(a) >= 6


def test_digest_of_an_unknown_audience_names_it(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    code, _, err = run("digest", "lezers", "--config", str(config), "--now", NOW)
    assert code == 2 and "no audience 'lezers' (known: beslissers, bouwers, onderzoekers)" in err


def test_digest_with_nothing_new_says_so(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    code, out, _ = run("digest", "beslissers", "--config", str(config), "--now", "2026-12-20T09:00")
    assert code == 0 and "nothing to preview" in out
    assert not (tmp_path / "preview" / "beslissers").exists()


def test_check_reports_email_findings_per_audience(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    code, out, err = run("check", "--config", str(config), "--now", NOW)
    assert code == 0, err
    assert "audience 'beslissers': digest of 3 article(s)" in out and "0 error(s)" in out
    # A site template that breaks two rules: exit 1, and each finding names audience + element.
    email = tmp_path / "templates" / "email"
    email.mkdir(parents=True)
    (email / "digest.html").write_text(
        '{% extends "default/digest.html" %}{% block header %}{{ super() }}'
        '<img src="https://ai-nieuws.example.nl/logo.png" width="80"><a href="archief/">Archief</a>'
        "{% endblock %}"
    )
    code, out, err = run("check", "--config", str(config), "--now", NOW)
    assert code == 1
    assert "error: audience 'bouwers': <img src=\"https://ai-nieuws.example.nl/logo.png\">: has no alt attribute" in err
    assert "error: audience 'beslissers': <a href=\"archief/\">: relative or unsupported URL in href" in err


def test_check_reports_a_template_that_fails(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    email = tmp_path / "templates" / "email"
    email.mkdir(parents=True)
    (email / "digest.txt").write_text("{{ lead.no_such_field }}\n")
    code, _, err = run("check", "--config", str(config), "--now", NOW)
    assert code == 1 and "audience 'beslissers': digest: digest.txt:" in err and "no_such_field" in err


def test_scheduled_send_names_a_bad_time(tmp_path: Path) -> None:
    # Internal (started by `newsletter run`), but a bad --fire is a clear config error, not a trace.
    config = copy_site(tmp_path)
    code, _, err = run("scheduled-send", "--config", str(config), "beslissers", "--fire", "maandag",
                       "--started", "2026-11-30T07:00:00+00:00")
    assert code == 2
    assert "--fire/--started" in err and "maandag" in err
    assert not (tmp_path / "newsletter.db").exists()  # nothing was prepared or sent


@pytest.mark.parametrize("argv", [["--version"], ["build", "--config", "missing.toml"]])
def test_the_program_exits_without_a_last_cycle_search(argv: list[str], tmp_path: Path) -> None:
    """`python -m newsletter` and the `newsletter` script freeze the heap on the way out (the
    interpreter's last collections cost a 10k build ~40 ms), whatever the exit code; atexit
    handlers still run."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        f"sys.argv = ['newsletter', *{argv!r}]\n"
        "from newsletter.cli import console_main\n"
        "console_main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.splitlines()[-1] == "frozen True"
    assert done.returncode == (0 if argv == ["--version"] else 2), done.stderr
