"""`newsletter subscribers ...` and `newsletter send` end to end on a copy of the sample site:
real SQLite file, the outbox transport (and SMTP in test_sending.py / test_send_faults.py)."""

from __future__ import annotations

import csv
import email
import email.policy
import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import copy_site

from newsletter.cli import main
from newsletter.config import load_config
from newsletter.store import Store

SEND_NOW = "2026-11-30T08:00"
KEY = "s" * 48


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"NEWSLETTER_SECRET_KEY": KEY, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return copy_site(tmp_path)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_import_reports_bad_rows_by_line_and_imports_the_rest(site: Path, tmp_path: Path) -> None:
    data = write_csv(
        tmp_path / "lijst.csv",
        "email,name,audiences\n"
        "anna@example.nl,Anna de Vries,beslissers;bouwers\n"
        "Bob@Example.NL,Bob,beslissers\n"
        "geen-adres,X,beslissers\n"
        "cees@example.nl,Cees,lezers\n"
        "\n"
        "dirk@example.nl,Dirk,\n",
    )
    code, out, err = run("subscribers", "import", str(data), "--config", str(site))
    assert code == 1
    assert "2 added, 0 updated, 0 unchanged, 0 skipped, 3 bad row(s)" in out
    assert "line 4 'geen-adres': invalid address" in err
    assert "line 5 'cees@example.nl': unknown audience 'lezers'; known: beslissers, bouwers, onderzoekers" in err
    assert "line 7 'dirk@example.nl': no audiences" in err
    # idempotent: the same file again changes nothing; --audience fills in the empty cell
    code, out, _ = run("subscribers", "import", str(data), "--config", str(site), "--audience", "bouwers")
    assert "1 added, 0 updated, 2 unchanged" in out
    code, out, _ = run("subscribers", "count", "--config", str(site))
    assert code == 0 and out.splitlines() == ["beslissers\t2", "bouwers\t2", "onderzoekers\t0"]


def test_import_never_reactivates_an_unsubscribed_address(site: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "a.csv", "anna@example.nl,Anna,beslissers\n")
    assert run("subscribers", "import", str(data), "--config", str(site))[0] == 0
    code, out, _ = run("subscribers", "remove", "ANNA@example.nl", "--config", str(site))
    assert code == 0 and "anna@example.nl: updated" in out
    code, out, _ = run("subscribers", "import", str(data), "--config", str(site))
    assert "0 added" in out and "skipped" in out and "unsubscribed" in out
    code, out, _ = run("subscribers", "list", "--config", str(site))
    assert out == "anna@example.nl\tAnna\tunsubscribed\n"


def test_add_remove_list_export(site: Path, tmp_path: Path) -> None:
    assert run("subscribers", "add", "e@example.nl", "--name", "Eva", "--audience", "bouwers", "--config", str(site))[0] == 0
    assert run("subscribers", "add", "f@example.nl", "--audience", "beslissers", "--audience", "bouwers", "--config", str(site))[0] == 0
    code, _, err = run("subscribers", "add", "g@example.nl", "--audience", "lezers", "--config", str(site))
    assert code == 2 and "no audience 'lezers'" in err
    code, _, err = run("subscribers", "add", "kapot", "--audience", "bouwers", "--config", str(site))
    assert code == 1 and "kapot" in err
    assert run("subscribers", "remove", "f@example.nl", "--audience", "bouwers", "--config", str(site))[0] == 0
    code, out, _ = run("subscribers", "list", "--audience", "bouwers", "--config", str(site))
    assert out == "e@example.nl\tEva\tactive\n"
    code, out, _ = run("subscribers", "export", "--config", str(site))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["email"], r["name"], r["audiences"], r["status"]) for r in rows] == [
        ("e@example.nl", "Eva", "bouwers", "active"),
        ("f@example.nl", "", "beslissers", "active"),
    ]
    # the export is importable as it is
    exported = write_csv(tmp_path / "export.csv", out)
    code, out, _ = run("subscribers", "import", str(exported), "--config", str(site))
    assert code == 0 and "0 added, 0 updated, 2 unchanged" in out
    code, _, err = run("subscribers", "remove", "nobody@example.nl", "--config", str(site))
    assert code == 1


def subscribe(site: Path, tmp_path: Path, count: int = 5) -> list[str]:
    addresses = [f"lezer{i}@example.nl" for i in range(count)]
    lines = "".join(f"{a},Lezer {i},beslissers\n" for i, a in enumerate(addresses))
    assert run("subscribers", "import", str(write_csv(tmp_path / "s.csv", lines)), "--config", str(site))[0] == 0
    return addresses


def test_send_to_the_outbox_once(site: Path, tmp_path: Path) -> None:
    addresses = subscribe(site, tmp_path)
    code, out, err = run("send", "beslissers", "--now", SEND_NOW, "--config", str(site))
    assert code == 0, err
    assert "beslissers 2026-W49: sent; 5 sent, 0 failed, 0 suppressed, 0 unknown" in out
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 5
    received = sorted(
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"].addresses[0].addr_spec
        for f in files
    )
    assert received == sorted(addresses)
    code, out, _ = run("send", "beslissers", "--now", SEND_NOW, "--config", str(site))
    assert code == 0 and "already sent" in out and len(list((tmp_path / "outbox").glob("*.eml"))) == 5
    # the archive page of the issue is the view-in-browser target, without personal data
    page = (tmp_path / "public" / "archive" / "beslissers" / "2026-W49.html").read_text()
    assert "Lezer 0" not in page and "%%" not in page and "/unsubscribe/" not in page
    assert "2026-W49.html" in (tmp_path / "public" / "archive" / "beslissers" / "index.html").read_text()


def test_send_needs_the_secret_key(site: Path, tmp_path: Path) -> None:
    subscribe(site, tmp_path)
    code, _, err = run("send", "beslissers", "--now", SEND_NOW, "--config", str(site), env={"NEWSLETTER_SECRET_KEY": ""})
    assert code == 2 and "NEWSLETTER_SECRET_KEY" in err
    assert not (tmp_path / "outbox").exists()


def test_dry_run_changes_nothing(site: Path, tmp_path: Path) -> None:
    subscribe(site, tmp_path, 3)
    code, out, _ = run("send", "beslissers", "--now", SEND_NOW, "--dry-run", "--config", str(site))
    assert code == 0 and "would send" in out and "to 3 active subscriber(s)" in out
    store = Store.open(load_config(site).store_url)
    assert store.list_issues() == []
    store.close()
    assert not (tmp_path / "outbox").exists()


def test_test_to_marks_the_subject_and_records_nothing(site: Path, tmp_path: Path) -> None:
    subscribe(site, tmp_path, 2)
    code, out, err = run("send", "beslissers", "--now", SEND_NOW, "--test-to", "redactie@example.nl", "--config", str(site))
    assert code == 0, err
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"].startswith("[TEST] ") and message["To"].addresses[0].addr_spec == "redactie@example.nl"
    store = Store.open(load_config(site).store_url)
    assert store.list_issues() == []
    store.close()


def test_period_option_is_checked_against_the_schedule(site: Path, tmp_path: Path) -> None:
    code, _, err = run("send", "beslissers", "--period", "2026-11", "--config", str(site))
    assert code == 2 and "beslissers is weekly; write it like 2026-W48" in err
    code, _, err = run("send", "onderzoekers", "--period", "2026-W48", "--config", str(site))
    assert code == 2 and "monthly" in err


def test_an_empty_issue_is_skipped(site: Path, tmp_path: Path) -> None:
    subscribe(site, tmp_path, 2)
    code, out, _ = run("send", "beslissers", "--now", "2026-12-28T08:00", "--config", str(site))
    assert code == 0 and "skipped" in out
    assert not (tmp_path / "outbox").exists()


def test_plan_text_and_json(site: Path, tmp_path: Path) -> None:
    import json

    code, out, err = run("plan", "--at", "2026-11-28T09:00", "--config", str(site))
    assert code == 0, err
    assert "beslissers (Voor beslissers)" in out and "schedule: mon 08:00" in out
    assert "next: Mon 2026-11-30 08:00 CET  (2026-11-30 07:00 UTC)" in out
    assert not (tmp_path / "newsletter.db").exists()  # plan creates no database
    code, out, _ = run("plan", "--at", "2026-11-28T09:00", "--audience", "bouwers", "--json", "--config", str(site))
    (plan,) = json.loads(out)
    assert plan["audience"] == "bouwers" and plan["period"] == "2026-W49"
    assert plan["next_fires"][0] == {"local": "2026-12-03T07:30:00+01:00", "utc": "2026-12-03T06:30:00+00:00"}
    assert plan["outcome"] == "send" and plan["subject"].startswith("AI voor bouwers – week 49")
    assert [a["title"] for a in plan["articles"]] == ["NCSC publiceert richtlijnen tegen prompt-injectie in AI-agents"]
    assert plan["articles"][0]["published"].endswith("+01:00")
    # after a send, the same plan says so and counts the subscribers
    subscribe(site, tmp_path, 2)
    code, out, _ = run("plan", "--at", "2026-11-28T09:00", "--audience", "beslissers", "--config", str(site))
    assert "2 active subscriber(s)" in out


def test_a_missing_smtp_credential_names_the_variable(site: Path, tmp_path: Path) -> None:
    subscribe(site, tmp_path, 1)
    text = site.read_text(encoding="utf-8").replace('transport = "outbox"', 'transport = "smtp"')
    site.write_text(text, encoding="utf-8")
    code, _, err = run("send", "beslissers", "--now", SEND_NOW, "--config", str(site),
                       env={"NEWSLETTER_SMTP_USER": "", "NEWSLETTER_SMTP_PASSWORD": ""})
    assert code == 2
    assert "delivery.smtp.username_env" in err and "NEWSLETTER_SMTP_USER is not set" in err
    store = Store.open(load_config(site).store_url)
    assert store.list_issues() == []  # nothing was started
    store.close()


def test_an_import_file_that_is_not_utf8_is_refused_by_name(site: Path, tmp_path: Path) -> None:
    data = tmp_path / "latin1.csv"
    data.write_bytes("anna@example.nl,Anna Müller,beslissers\n".encode("latin-1"))
    code, _, err = run("subscribers", "import", str(data), "--config", str(site))
    assert code == 1 and f"{data}: not UTF-8 text" in err
