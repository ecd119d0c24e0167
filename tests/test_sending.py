"""sending.py: one issue to its frozen recipients through a real SMTP server on 127.0.0.1, with a
real SQLite store. Every message is parsed back and checked; the ledger is checked after each run.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import AMSTERDAM
from test_delivery import Recorder, Start, plain, start_server  # noqa: F401 - fixture

from newsletter import links
from newsletter.collector import load_catalog
from newsletter.config import Config
from newsletter.errors import ConfigError
from newsletter.model import ImportRow
from newsletter.sending import SendOptions, prepare_issue, send_issue, skip_issue
from newsletter.store import Store
from newsletter.tokens import read_token

KEY = b"k" * 40
SEND_AT = datetime(2026, 11, 30, 8, 0, tzinfo=AMSTERDAM)
FAST = SendOptions(batch_size=4, max_attempts=3, backoff=0.0, max_consecutive_failures=5)


@pytest.fixture
def store(sample_config: Config) -> Store:
    store = Store.open(sample_config.store_url)
    yield store
    store.close()


def subscribe(store: Store, count: int, audience: str = "beslissers", prefix: str = "lezer") -> list[str]:
    addresses = [f"{prefix}{i}@example.nl" for i in range(count)]
    rows = [ImportRow(a, f"Lezer {i}", (audience,)) for i, a in enumerate(addresses)]
    store.import_rows(rows, SEND_AT - timedelta(days=1))
    return addresses


def prepared(config: Config, store: Store, period: str = "2026-W49", at: datetime = SEND_AT) -> Any:
    catalog = load_catalog(config)
    issue, plan = prepare_issue(
        config, config.audience("beslissers"), period, at, store, catalog.articles, catalog.rendered, at
    )
    return issue, plan


def parse(data: bytes) -> Any:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_every_subscriber_gets_one_valid_message(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    server, recorder = start_server()
    addresses = subscribe(store, 10)
    issue, _ = prepared(sample_config, store)
    transport = plain(server)
    report = send_issue(sample_config, issue, store, transport, KEY, FAST)
    transport.close()
    assert report.status == "sent" and report.counts["sent"] == 10
    assert sorted(recorder.recipients()) == sorted(addresses)
    assert store.get_issue("beslissers", "2026-W49").status == "sent"
    message_ids = set()
    for received in recorder.received:
        message = parse(received.data)
        (recipient,) = received.rcpt_tos
        message_ids.add(message["Message-ID"])
        assert message["To"].addresses[0].addr_spec == recipient
        assert message["Subject"] == issue.subject
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Id"] == '"AI-nieuws: Voor beslissers" <beslissers.ai-nieuws.example.nl>'
        https, mailto = (part.strip(" <>") for part in message["List-Unsubscribe"].split(","))
        token = https.rsplit("/", 1)[1]
        claims = read_token(KEY, token, "unsubscribe", SEND_AT)
        assert claims.audience_id == "beslissers"
        assert store.get_subscriber(claims.subscriber_id).email == recipient
        assert mailto.startswith("mailto:afmelden@ai-nieuws.example.nl?subject=unsubscribe%20")
        # the links are what links.py makes for the token (personal_values appends tokens)
        assert https == links.unsubscribe_url(sample_config.public_url, token)
        assert mailto == links.unsubscribe_mailto(sample_config.email.unsubscribe_mailto, token)
        plain_part, html_part = message.get_payload()
        assert plain_part.get_content_type() == "text/plain"
        assert html_part.get_content_type() == "text/html"
        text, html = plain_part.get_content(), html_part.get_content()
        assert https in text and "%%" not in text and "%%" not in html
        # the footer's preferences link: a signed, expiring token for every audience
        preferences = re.search(r"https://ai-nieuws\.example\.nl/preferences/(\S+)", text)
        assert preferences is not None, text
        settings = read_token(KEY, preferences.group(1), "preferences", SEND_AT)
        assert preferences.group(0) == links.preferences_url(sample_config.public_url, preferences.group(1))
        assert settings.subscriber_id == claims.subscriber_id and settings.audience_id == "*"
        assert settings.expires_at is not None and settings.expires_at > SEND_AT + timedelta(days=300)
        assert f'href="https://ai-nieuws.example.nl/preferences/{preferences.group(1)}"' in html
        assert links.archive_url(sample_config.site.url, "beslissers", "2026-W49") in html
        assert all(len(line) <= 998 for line in received.data.split(b"\r\n"))
    assert len(message_ids) == 10
    deliveries = list(store.list_deliveries(issue.id))
    assert {d.message_id for d in deliveries} == message_ids


def test_a_rerun_sends_nothing_twice(sample_config: Config, store: Store, start_server: Start) -> None:
    server, recorder = start_server()
    subscribe(store, 6)
    issue, _ = prepared(sample_config, store)
    first = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    again, _ = prepared(sample_config, store)  # the stored issue comes back, not a new render
    assert again.id == issue.id and again.html == issue.html
    second = send_issue(sample_config, again, store, plain(server), KEY, FAST)
    assert (first.status, second.status) == ("sent", "already sent")
    assert len(recorder.received) == 6



def test_links_that_cannot_be_made_refuse_the_send_and_leave_it_queued(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    """An http public URL cannot carry RFC 8058 one-click: a config error naming the key, before
    any delivery is claimed (not one failed delivery per subscriber); fixed, the send resumes."""
    server, recorder = start_server()
    subscribe(store, 3)
    issue, _ = prepared(sample_config, store)
    bad = replace(sample_config, public_url="http://localhost:8080")
    with pytest.raises(ConfigError) as raised:
        send_issue(bad, issue, store, plain(server), KEY, FAST)
    assert raised.value.key == "web.public_url" and "https" in raised.value.message
    assert store.delivery_counts(issue.id)["queued"] == 3 and not recorder.received
    again, _ = prepared(sample_config, store)
    assert send_issue(sample_config, again, store, plain(server), KEY, FAST).status == "sent"
    assert len(recorder.received) == 3

def test_recipients_are_frozen_and_unsubscribes_honoured(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    server, recorder = start_server()
    addresses = subscribe(store, 8)
    issue, _ = prepared(sample_config, store)
    now = datetime.now(UTC)
    store.freeze_recipients(issue.id, "beslissers", now)
    subscribe(store, 3, prefix="laat")  # joined after the freeze: not in this issue
    store.remove_subscriber(addresses[0], now)  # left after the freeze: not sent either
    store.suppress(addresses[1], "complaint", now)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert sorted(recorder.recipients()) == sorted(addresses[2:])
    assert report.counts["suppressed"] == 2 and report.counts["sent"] == 6


def test_a_refused_recipient_fails_alone_and_5_1_1_suppresses_the_address(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    addresses = subscribe(store, 6)
    recorder = Recorder(refuse={
        addresses[2]: f"550 5.1.1 <{addresses[2]}>: Recipient address rejected: User unknown",
        addresses[4]: "552 5.2.2 Mailbox full",
    })
    server, _ = start_server(recorder)
    issue, _ = prepared(sample_config, store)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert report.status == "sent"
    assert report.counts == {**report.counts, "sent": 4, "failed": 2}
    assert sorted(recorder.recipients()) == sorted(set(addresses) - {addresses[2], addresses[4]})
    failed = {d.email: d.last_error for d in store.list_deliveries(issue.id) if d.status == "failed"}
    assert "5.1.1" in failed[addresses[2]] and "5.2.2" in failed[addresses[4]]
    assert store.is_suppressed(addresses[2]) and not store.is_suppressed(addresses[4])


def test_temporary_failures_are_retried(sample_config: Config, store: Store, start_server: Start) -> None:
    addresses = subscribe(store, 3)

    class Flaky(Recorder):
        tries: dict[str, int] = {}

        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            self.tries[address] = self.tries.get(address, 0) + 1
            if address == addresses[1] and self.tries[address] < 3:
                return "451 4.7.1 Greylisted, try again"
            return await super().handle_RCPT(server, session, envelope, address, options)

    recorder = Flaky()
    server, _ = start_server(recorder)
    issue, _ = prepared(sample_config, store)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST, sleep=lambda s: None)
    assert report.counts["sent"] == 3 and recorder.tries[addresses[1]] == 3
    attempts = {d.email: d.attempts for d in store.list_deliveries(issue.id)}
    assert attempts[addresses[1]] == 1  # one claim; the retries are inside it


def test_retries_give_up_with_the_reason(sample_config: Config, store: Store, start_server: Start) -> None:
    addresses = subscribe(store, 2)
    server, _ = start_server(Recorder(refuse={addresses[0]: "450 4.2.0 Mailbox busy"}))
    issue, _ = prepared(sample_config, store)
    waits: list[float] = []
    options = replace(FAST, backoff=2.0)
    send_issue(sample_config, issue, store, plain(server), KEY, options, sleep=waits.append)
    (failed,) = [d for d in store.list_deliveries(issue.id) if d.status == "failed"]
    assert failed.email == addresses[0] and "gave up after 3 tries" in failed.last_error
    assert len(waits) == 2 and 0 <= waits[0] <= 2.0 and 0 <= waits[1] <= 4.0  # full jitter


def test_a_policy_rejection_pauses_the_issue_and_a_rerun_resumes(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    addresses = subscribe(store, 12)
    blocked = Recorder(refuse={addresses[5]: "554 5.7.1 Service unavailable; client host blocked"})
    server, _ = start_server(blocked)
    issue, _ = prepared(sample_config, store)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert report.status == "paused" and "5.7.1" in report.message
    assert report.counts["queued"] > 0 and report.counts["sending"] == 0
    assert store.get_issue("beslissers", "2026-W49").status == "sending"
    server2, recorder2 = start_server()  # the block is lifted
    resumed = send_issue(sample_config, issue, store, plain(server2), KEY, FAST)
    assert resumed.status == "sent"
    everyone = set(blocked.recipients()) | set(recorder2.recipients())
    assert everyone == set(addresses) - {addresses[5]}
    assert not set(blocked.recipients()) & set(recorder2.recipients())


def test_many_failures_in_a_row_pause_the_issue(sample_config: Config, store: Store, start_server: Start) -> None:
    addresses = subscribe(store, 20)
    server, _ = start_server(Recorder(refuse={a: "550 5.2.1 Mailbox disabled" for a in addresses}))
    issue, _ = prepared(sample_config, store)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert report.status == "paused" and "5 deliveries failed in a row" in report.message
    assert report.counts["failed"] >= 5 and report.counts["queued"] > 0


def test_a_dropped_connection_after_data_is_unknown_and_not_resent(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    addresses = subscribe(store, 5)
    recorder = Recorder(drop_after_data={addresses[3]})
    server, _ = start_server(recorder)
    issue, _ = prepared(sample_config, store)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert report.counts["unknown"] == 1 and report.counts["sent"] == 4 and report.status == "sent"
    again = send_issue(sample_config, store.get_issue_by_id(issue.id), store, plain(server), KEY, FAST)
    assert again.status == "already sent" and recorder.recipients().count(addresses[3]) == 1
    recorder.drop_after_data.clear()
    retry = send_issue(
        sample_config, store.get_issue_by_id(issue.id), store, plain(server), KEY,
        replace(FAST, retry_unknown=True),
    )
    assert retry.status == "sent" and retry.counts["unknown"] == 0
    assert recorder.recipients().count(addresses[3]) == 2  # the operator accepted a possible repeat


def test_rows_left_sending_by_a_crash_become_unknown(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    server, recorder = start_server()
    subscribe(store, 7)
    issue, _ = prepared(sample_config, store)
    store.set_issue_status(issue.id, "sending", datetime.now(UTC))
    store.freeze_recipients(issue.id, "beslissers", datetime.now(UTC))
    crashed = store.claim_batch(issue.id, 3, datetime.now(UTC))  # claimed, then the process died
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert report.marked_unknown == 3 and report.counts["unknown"] == 3
    assert report.counts["sent"] == 4
    assert not {d.email for d in crashed} & set(recorder.recipients())


def test_a_second_sender_is_kept_out_by_the_lease(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    server, recorder = start_server()
    subscribe(store, 3)
    issue, _ = prepared(sample_config, store)
    assert store.acquire_lease(f"issue:{issue.id}", "other-host:1", 300, datetime.now(UTC))
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST)
    assert report.status == "busy" and not recorder.received
    assert store.delivery_counts(issue.id)["sending"] == 0


def test_a_lease_is_taken_over_only_from_a_dead_sender_of_this_host_boot_and_pid_namespace(
    store: Store,
) -> None:
    """A rerun right after a crash takes the issue's lease from the killed sender; never from
    one a pid check here cannot see: another host, or a container with the same hostname (its
    own PID namespace), or an owner that does not say where its pid lives."""
    from newsletter import sending

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, space = socket.gethostname(), sending._process_space()
    assert space  # Linux: the boot id and the PID namespace can be read
    cases = {
        f"{host}:{gone.pid}:aaaa:{space}": True,
        f"{host}:{os.getpid()}:aaaa:{space}": False,  # alive
        f"{host}:{gone.pid}:aaaa:{'0' * 12}": False,  # another boot or PID namespace
        f"{host}:{gone.pid}:aaaa": False,  # written before owners said where their pid lives
        f"other-{host}:{gone.pid}:aaaa:{space}": False,
    }
    now = datetime.now(UTC)
    for n, (holder, taken) in enumerate(cases.items()):
        lease = f"issue:{1000 + n}"
        assert store.acquire_lease(lease, holder, 300, now)
        assert sending._take_lease(store, lease, f"{host}:{os.getpid()}:bbbb:{space}", 300, now) is taken, holder


def test_stop_finishes_in_flight_and_keeps_the_rest_queued(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    stop = threading.Event()

    class StopAfterFour(Recorder):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            reply = await super().handle_DATA(server, session, envelope)
            if len(self.received) == 4:
                stop.set()  # as the SIGTERM handler does, while messages are in flight
            return reply

    server, recorder = start_server(StopAfterFour())
    subscribe(store, 30)
    issue, _ = prepared(sample_config, store)
    report = send_issue(sample_config, issue, store, plain(server), KEY, FAST, stop=stop)
    assert report.status == "stopped"
    counts = report.counts
    assert counts["sending"] == 0 and counts["sent"] + counts["queued"] == 30
    assert len(recorder.received) == counts["sent"] >= 4 and counts["queued"] > 0
    rest = send_issue(sample_config, store.get_issue_by_id(issue.id), store, plain(server), KEY, FAST)
    assert rest.status == "sent" and len(recorder.received) == 30
    assert len(set(recorder.recipients())) == 30


def test_parallel_connections_send_each_message_once(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    server, recorder = start_server()
    addresses = subscribe(store, 40)
    issue, _ = prepared(sample_config, store)
    transport = plain(server, connections=3)
    report = send_issue(sample_config, issue, store, transport, KEY, replace(FAST, batch_size=10))
    transport.close()
    assert report.counts["sent"] == 40 and sorted(recorder.recipients()) == sorted(addresses)
    assert len(recorder.peers) >= 2


def test_an_empty_issue_is_skipped_and_the_next_window_starts_after_it(
    sample_config: Config, store: Store
) -> None:
    quiet = datetime(2026, 12, 21, 8, tzinfo=AMSTERDAM)
    issue, plan = prepared(sample_config, store, "2026-W52", quiet)
    assert issue is None and plan is not None and plan.empty
    skipped = skip_issue(sample_config.audience("beslissers"), "2026-W52", plan, store, quiet)
    assert skipped.status == "skipped" and list(store.list_deliveries(skipped.id)) == []
    # the next issue looks back to the skipped one's end, not the 7-day window
    catalog = load_catalog(sample_config)
    later = quiet + timedelta(days=7)
    _, plan2 = prepare_issue(
        sample_config, sample_config.audience("beslissers"), "2027-W01", later, store,
        catalog.articles, catalog.rendered, later,
    )
    assert plan2 is not None and plan2.period_start == quiet


def test_consecutive_issues_continue_where_the_previous_ended(
    sample_config: Config, store: Store, start_server: Start
) -> None:
    server, _ = start_server()
    subscribe(store, 1)
    first_at = datetime(2026, 11, 25, 8, tzinfo=AMSTERDAM)
    first, _ = prepared(sample_config, store, "2026-W48", first_at)
    send_issue(sample_config, first, store, plain(server), KEY, FAST)
    second, _ = prepared(sample_config, store, "2026-W49")
    assert second.window_start == first.window_end
    assert not set(first.article_ids) & set(second.article_ids)


def test_the_outbox_transport_writes_the_same_messages(sample_config: Config, store: Store, tmp_path: Path) -> None:
    from newsletter.delivery import make_transport

    subscribe(store, 3)
    issue, _ = prepared(sample_config, store)
    outbox = make_transport("outbox", outbox_dir=tmp_path / "outbox")
    report = send_issue(sample_config, issue, store, outbox, KEY, FAST)
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert report.counts["sent"] == 3 and len(files) == 3
    ids = {parse(f.read_bytes())["Message-ID"] for f in files}
    assert ids == {d.message_id for d in store.list_deliveries(issue.id)}
