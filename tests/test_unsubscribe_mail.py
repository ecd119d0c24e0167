"""Unsubscribe requests by mail (the List-Unsubscribe mailto): found in real request messages,
acted on in a real SQLite store, read from a real Maildir or stdin by the CLI."""

from __future__ import annotations

import email
import email.header
import email.policy
import sqlite3
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from configtext import without_tables
from conftest import copy_site
from hypothesis import given
from hypothesis import strategies as st

from newsletter.cli import main
from newsletter.config import load_config
from newsletter.store import Store
from newsletter.tokens import make_token
from newsletter.unsubscribe_mail import find_token, handle, maildir_new, mark_handled, parse

KEY = "s" * 48
SEND_NOW = "2026-11-30T08:00"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def run(*args: str, stdin: bytes | None = None, key: str = KEY) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, env={"NEWSLETTER_SECRET_KEY": key})
    return result.exit_code, result.stdout, result.stderr


def request(
    subject: str, body: str = "", sender: str = "lezer@example.nl", to: str = "afmelden@ai-nieuws.example.nl"
) -> bytes:
    """A request as a mail client sends it from a mailto: URI."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body or "\n")
    return message.as_bytes()


def from_mailto(uri: str, sender: str) -> bytes:
    """What a mail client sends for a List-Unsubscribe mailto (RFC 6068: to + ?subject=)."""
    parts = urlsplit(uri)
    assert parts.scheme == "mailto"
    return request(parse_qs(parts.query)["subject"][0], sender=sender, to=parts.path)


def maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def encoded(text: str) -> bytes:
    """text as RFC 2047 encoded-words (Q encoding writes the token's "_" as =5F)."""
    return email.header.Header(text, "utf-8").encode().encode("ascii")


# --- finding the token ---------------------------------------------------------------------------
TOKEN = make_token(KEY.encode(), 42, "beslissers", "unsubscribe", NOW)


@pytest.mark.parametrize(
    ("raw", "found"),
    [
        (request(f"unsubscribe {TOKEN}"), TOKEN),
        (request(f"Re: Unsubscribe  {TOKEN}"), TOKEN),
        (request(f"AW: UNSUBSCRIBE {TOKEN} please"), TOKEN),
        # a subject a client sent RFC 2047-encoded
        (b"From: a@example.nl\r\nSubject: " + encoded(f"unsubscribe {TOKEN}") + b"\r\n\r\nx\r\n", TOKEN),
        (request("", body=f"Graag afmelden.\nunsubscribe {TOKEN}\n"), TOKEN),  # pasted into the text
        (request("afmelden", body=f"unsubscribe {TOKEN}"), TOKEN),
        (request(f"unsubscribe{TOKEN}"), None),
        (request(f"{TOKEN}"), None),
        (request("unsubscribe me"), None),
        (request("unsubscribe"), None),
        (b"not a mail at all", None),
        (b"", None),
    ],
)
def test_find_token(raw: bytes, found: str | None) -> None:
    assert find_token(parse(raw)) == found


def test_a_token_is_looked_for_only_at_the_start_of_a_long_text() -> None:
    assert find_token(parse(request("hallo", body="x" * 10_000 + f"\nunsubscribe {TOKEN}\n"))) is None


@given(
    subscriber_id=st.integers(0, 2**63 - 1),
    audience=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40),
    before=st.sampled_from(["", "Re: ", "RE: Fwd: ", "Antw: ", "[ext] "]),
    after=st.sampled_from(["", " ", " bedankt", "\t(via mobiel)"]),
)
def test_every_token_is_found_in_the_subject_a_client_makes(
    subscriber_id: int, audience: str, before: str, after: str
) -> None:
    token = make_token(KEY.encode(), subscriber_id, audience, "unsubscribe", NOW)
    assert find_token(parse(request(f"{before}unsubscribe {token}{after}"))) == token


@given(
    head=st.binary(max_size=300),
    subject=st.binary(max_size=120),
    charset=st.sampled_from([b"utf-8", b"x-unknown", b"iso-8859-1", b""]),
    body=st.binary(max_size=300),
)
def test_any_bytes_give_a_token_or_none_never_an_error(
    head: bytes, subject: bytes, charset: bytes, body: bytes
) -> None:
    raw = (
        head + b"\r\nSubject: " + subject + b"\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain; charset=" + charset + b"\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body + b"\r\n--b--\r\n"
    )
    found = find_token(parse(raw))
    assert found is None or len(found) >= 16


# --- acting on it ---------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.open(f"sqlite:///{tmp_path / 'n.db'}")
    opened.add_subscriber("anna@example.nl", "Anna", ["beslissers", "bouwers"], NOW)
    return opened


def test_handle_leaves_the_tokens_audience_only_and_once(store: Store) -> None:
    anna = store.get_subscriber("anna@example.nl")
    assert anna is not None
    token = make_token(KEY.encode(), anna.id, "beslissers", "unsubscribe", NOW)
    done = handle(store, KEY.encode(), parse(request(f"unsubscribe {token}")), NOW)
    assert (done.outcome, done.subscriber_id, done.audience_id) == ("unsubscribed", anna.id, "beslissers")
    assert store.memberships(anna.id) == {"beslissers": "unsubscribed", "bouwers": "active"}
    again = handle(store, KEY.encode(), parse(request(f"Re: unsubscribe {token}")), NOW)
    assert again.outcome == "already"
    assert store.memberships(anna.id) == {"beslissers": "unsubscribed", "bouwers": "active"}


@pytest.mark.parametrize(
    ("token", "outcome", "reason"),
    [
        (TOKEN[:-2] + ("AA" if not TOKEN.endswith("AA") else "BB"), "refused", "signature"),
        (make_token(b"k" * 48, 1, "beslissers", "unsubscribe", NOW), "refused", "signature"),
        (make_token(KEY.encode(), 1, "*", "preferences", NOW), "refused", "purpose"),
        (make_token(KEY.encode(), 999_999, "beslissers", "unsubscribe", NOW), "unknown subscriber", ""),
        ("A" * 20, "refused", "format"),
    ],
)
def test_handle_refuses_what_is_not_a_valid_unsubscribe_token(
    store: Store, token: str, outcome: str, reason: str
) -> None:
    anna = store.get_subscriber("anna@example.nl")
    assert anna is not None
    done = handle(store, KEY.encode(), parse(request(f"unsubscribe {token}")), NOW)
    assert done.outcome == outcome
    assert f"({reason})" in done.describe() if reason else "no such subscriber" in done.describe()
    assert store.memberships(anna.id) == {"beslissers": "active", "bouwers": "active"}


# --- the Maildir edge -----------------------------------------------------------------------------
def test_maildir_new_and_mark_handled(tmp_path: Path) -> None:
    box = maildir(tmp_path / "box")
    (box / "new" / "2.b").write_bytes(b"x")
    (box / "new" / "1.a").write_bytes(b"x")
    (box / "new" / ".hidden").write_bytes(b"x")
    (box / "cur" / "0.z:2,").write_bytes(b"x")  # already read: never acted on again
    assert [p.name for p in maildir_new(box)] == ["1.a", "2.b"]
    assert mark_handled(box / "new" / "1.a") == box / "cur" / "1.a:2,S"
    assert [p.name for p in maildir_new(box)] == ["2.b"]
    with pytest.raises(NotADirectoryError, match="not a Maildir"):
        maildir_new(tmp_path)


# --- the command, end to end ---------------------------------------------------------------------
def sent_newsletters(site: Path, tmp_path: Path, count: int = 4) -> dict[str, EmailMessage]:
    """Subscribe `count` readers to beslissers and send them this week's issue (outbox)."""
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("".join(f"lezer{i}@example.nl,Lezer {i},beslissers\n" for i in range(count)))
    assert run("subscribers", "import", str(csv_file), "--config", str(site))[0] == 0
    code, _, err = run("send", "beslissers", "--now", SEND_NOW, "--config", str(site))
    assert code == 0, err
    sent: dict[str, EmailMessage] = {}
    for path in (tmp_path / "outbox").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        sent[message["To"].addresses[0].addr_spec] = message
    return sent


def mailto_of(message: EmailMessage) -> str:
    uris = [uri.strip().strip("<>") for uri in str(message["List-Unsubscribe"]).split(",")]
    (mailto,) = [uri for uri in uris if uri.startswith("mailto:")]
    assert urlsplit(mailto).path == "afmelden@ai-nieuws.example.nl"  # email.unsubscribe_mailto
    return mailto


def active(site: Path) -> int:
    with Store.open(load_config(site).store_url) as store:
        return store.count_by_audience().get("beslissers", 0)


def test_requests_mailed_from_sent_newsletters_unsubscribe_their_readers(tmp_path: Path) -> None:
    site = copy_site(tmp_path)
    sent = sent_newsletters(site, tmp_path)
    box = maildir(tmp_path / "unsubscribe")
    for number, reader in enumerate(["lezer0@example.nl", "lezer2@example.nl"]):
        (box / "new" / f"{number}.req").write_bytes(from_mailto(mailto_of(sent[reader]), reader))
    (box / "new" / "3.spam").write_bytes(request("Win a prize"))
    forged = mailto_of(sent["lezer1@example.nl"]).replace("%20", "%20x")  # a token one character off
    (box / "new" / "4.forged").write_bytes(from_mailto(forged, "someone@example.com"))

    code, out, err = run("subscribers", "unsubscribe-mail", str(box), "--config", str(site), "--now", "2026-12-01T09:00")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{box / 'new' / '0.req'}: unsubscribed subscriber ")
    assert lines[0].endswith(" from beslissers")
    assert lines[1].startswith(f"{box / 'new' / '1.req'}: unsubscribed subscriber ")
    assert lines[2] == f'{box / "new" / "3.spam"}: no token: no "unsubscribe TOKEN" in the subject or the text'
    assert lines[3].startswith(f"{box / 'new' / '4.forged'}: refused: token refused (")
    assert "4 requests: 2 unsubscribed, 1 no token, 1 refused" in err
    assert active(site) == 2
    with Store.open(load_config(site).store_url) as store:
        left = {s.email for s in store.list_subscribers() if store.memberships(s.id)["beslissers"] == "unsubscribed"}
    assert left == {"lezer0@example.nl", "lezer2@example.nl"}
    # every message is marked read, so a later run never acts on it again
    assert sorted(p.name for p in (box / "cur").iterdir()) == ["0.req:2,S", "1.req:2,S", "3.spam:2,S", "4.forged:2,S"]
    assert list((box / "new").iterdir()) == []
    code, out, err = run("subscribers", "unsubscribe-mail", str(box), "--config", str(site))
    assert (code, out) == (0, "") and "0 requests" in err


def test_a_request_piped_on_stdin(tmp_path: Path) -> None:
    site = copy_site(tmp_path)
    sent = sent_newsletters(site, tmp_path, count=2)
    raw = from_mailto(mailto_of(sent["lezer1@example.nl"]), "lezer1@example.nl")
    code, out, err = run("subscribers", "unsubscribe-mail", "-", "--config", str(site), stdin=raw)
    assert code == 0, err
    assert out.startswith("stdin: unsubscribed subscriber ") and active(site) == 1
    assert err == "1 request: 1 unsubscribed\n"
    code, out, _ = run("subscribers", "unsubscribe-mail", "-", "--config", str(site), stdin=raw)
    assert code == 0 and out.startswith("stdin: already unsubscribed: subscriber ")


def test_a_bad_source_is_reported_and_the_others_are_still_handled(tmp_path: Path) -> None:
    site = copy_site(tmp_path)
    sent = sent_newsletters(site, tmp_path, count=2)
    one = tmp_path / "one.eml"
    one.write_bytes(from_mailto(mailto_of(sent["lezer0@example.nl"]), "lezer0@example.nl"))
    not_a_maildir = tmp_path / "plain-folder"
    not_a_maildir.mkdir()
    code, out, err = run(
        "subscribers", "unsubscribe-mail", str(tmp_path / "missing"), str(not_a_maildir), str(one),
        "--config", str(site),
    )
    assert code == 1
    assert f"error: {tmp_path / 'missing'}: no such message file or Maildir" in err
    assert f"error: {not_a_maildir}: not a Maildir (it needs cur/, new/ and tmp/)" in err
    assert out.startswith(f"{one}: unsubscribed subscriber ") and active(site) == 1
    assert one.exists()  # a single file is the caller's to keep or delete


def test_a_store_that_cannot_be_opened_is_a_temporary_failure(tmp_path: Path) -> None:
    site = copy_site(tmp_path)
    text = without_tables(site.read_text(), {"store"}) + '\n[store]\nurl = "sqlite:////nonexistent-dir/newsletter.db"\n'
    site.write_text(text)
    box = maildir(tmp_path / "box")
    (box / "new" / "1.req").write_bytes(request(f"unsubscribe {TOKEN}"))
    code, _, err = run("subscribers", "unsubscribe-mail", str(box), "--config", str(site))
    assert code == 75  # EX_TEMPFAIL: a mail server keeps a piped message and tries again
    assert "error: store sqlite:////nonexistent-dir/newsletter.db: " in err
    assert (box / "new" / "1.req").exists()


def test_a_store_failure_leaves_the_request_and_the_rest_unread(tmp_path: Path) -> None:
    site = copy_site(tmp_path)
    url = load_config(site).store_url
    with Store.open(url) as store:
        store.add_subscriber("anna@example.nl", "Anna", ["beslissers"], NOW)
        anna = store.get_subscriber("anna@example.nl")
    assert anna is not None
    token = make_token(KEY.encode(), anna.id, "beslissers", "unsubscribe", NOW)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:  # a store that fails on writing
        db.execute("DROP TABLE memberships")
    box = maildir(tmp_path / "box")
    (box / "new" / "1.hello").write_bytes(request("hello"))
    (box / "new" / "2.req").write_bytes(request(f"unsubscribe {token}"))
    (box / "new" / "3.req").write_bytes(request(f"unsubscribe {token}"))
    code, out, err = run("subscribers", "unsubscribe-mail", str(box), "--config", str(site))
    assert code == 75
    assert out == f'{box / "new" / "1.hello"}: no token: no "unsubscribe TOKEN" in the subject or the text\n'
    assert f"error: {box / 'new' / '2.req'}: Store('{url}'): no such table: memberships; left for the next run" in err
    assert sorted(p.name for p in (box / "new").iterdir()) == ["2.req", "3.req"]


def test_the_secret_key_is_needed(tmp_path: Path) -> None:
    site = copy_site(tmp_path)
    code, _, err = run("subscribers", "unsubscribe-mail", "-", "--config", str(site), stdin=b"", key="")
    assert code == 2 and "NEWSLETTER_SECRET_KEY" in err
