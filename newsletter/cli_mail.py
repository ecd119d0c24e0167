"""The mailing commands: `newsletter subscribers ...` and `newsletter send`.

Registered on the main group by `cli.py`; the composition root for the store and transports.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from .cli_common import (
    EXIT_CONFIG,
    EXIT_PROBLEMS,
    _catalog,
    _load,
    _report_problems,
    config_option,
    log_to_stderr,
    now_option,
    parse_now,
)
from .errors import ConfigError, NewsletterError

if TYPE_CHECKING:
    from datetime import datetime

    from .collector import Catalog
    from .config import AudienceConfig, Config
    from .model import Issue, Subscriber
    from .sending import SendReport
    from .store import Store

EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a mail server delivers a piped message again later
_PERIOD_SHAPES = {"week": r"^\d{4}-W\d{2}$", "day": r"^\d{4}-\d{2}-\d{2}$", "month": r"^\d{4}-\d{2}$"}
_PERIOD_EXAMPLES = {"week": "2026-W48", "day": "2026-11-30", "month": "2026-11"}


def _fail(message: str, code: int = EXIT_PROBLEMS) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def open_store(config: Config) -> Iterator[Store]:
    from .store import Store

    try:
        store = Store.open(config.store_url)
    except NewsletterError as exc:
        _fail(f"store {config.store_url}: {exc}")
    try:
        yield store
    finally:
        store.close()


def _audience(config: Config, audience_id: str) -> AudienceConfig:
    try:
        return config.audience(audience_id)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _audience_ids(config: Config, given: tuple[str, ...]) -> tuple[str, ...]:
    for audience_id in given:
        _audience(config, audience_id)
    return given


# --- subscribers ---------------------------------------------------------------------------------
@click.group()
def subscribers() -> None:
    """Manage the subscriber list (stored in [store] url)."""


audience_option = click.option(
    "--audience",
    "audiences",
    multiple=True,
    metavar="ID",
    help="Audience id (repeatable).",
)


@subscribers.command("import")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@config_option
@audience_option
@now_option
def import_(csv_file: Path, config_path: Path, audiences: tuple[str, ...], now_text: str | None) -> None:
    """Import FILE.csv (columns email,name,audiences; audiences separated by ';').

    Rows without audiences get the --audience ones. Good rows are imported, bad rows reported with
    their line number and reason (exit 1). Re-importing is harmless; an address that unsubscribed
    is never re-activated.
    """
    from .subscriber_csv import RowProblem, read_rows

    config = _load(config_path)
    now = parse_now(now_text, config.site.timezone)
    defaults = _audience_ids(config, audiences)
    try:
        text = csv_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"{csv_file}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    rows, lines, problems = read_rows(text, [a.id for a in config.audiences])
    if not defaults:
        kept = [(row, line) for row, line in zip(rows, lines, strict=True) if row.audiences is not None]
        for row, line in zip(rows, lines, strict=True):
            if row.audiences is None:
                problems.append(RowProblem(line, row.email, "no audiences (add them in the file or with --audience)"))
        rows, lines = [row for row, _ in kept], [line for _, line in kept]
    with open_store(config) as store:
        result = store.import_rows(rows, now, default_audiences=defaults)
    # The store numbers rows by position; report them by CSV line. Invalid addresses are errors,
    # other skips (unsubscribed, suppressed, an exported non-active row) are expected.
    for skipped in result.problems:
        invalid = skipped.reason.startswith("invalid")
        problems.append(RowProblem(lines[skipped.row - 1], skipped.email, skipped.reason, bad=invalid))
    bad = sorted((p for p in problems if p.bad), key=lambda p: p.line)
    notes = sorted((p for p in problems if not p.bad), key=lambda p: p.line)
    for note in notes:
        click.echo(f"  skipped {note}")
    click.echo(
        f"{csv_file.name}: {result.added} added, {result.updated} updated, {result.unchanged} "
        f"unchanged, {len(notes)} skipped, {len(bad)} bad row(s)"
    )
    for problem in bad:
        click.echo(f"  {problem}", err=True)
    if bad:
        sys.exit(EXIT_PROBLEMS)


@subscribers.command()
@config_option
@audience_option
@click.option("--status", type=click.Choice(["pending", "active", "unsubscribed", "bounced", "complained"]), help="Only subscribers with this status.")
@click.option("--output", "output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of standard output.")
def export(config_path: Path, audiences: tuple[str, ...], status: str | None, output: Path | None) -> None:
    """Write subscribers as CSV (email,name,audiences,status), the import format plus status."""
    from .subscriber_csv import write_rows

    config = _load(config_path)
    wanted = _audience_ids(config, audiences)
    with open_store(config) as store:

        def rows() -> Iterator[tuple[Subscriber, list[str]]]:
            for subscriber in _subscribers_of(store, wanted, status):
                active = [a for a, s in sorted(store.memberships(subscriber.id).items()) if s == "active"]
                yield subscriber, active

        chunks = write_rows(rows())
        if output is None:
            for chunk in chunks:
                click.echo(chunk, nl=False)
        else:
            with output.open("w", encoding="utf-8", newline="") as handle:
                for chunk in chunks:
                    handle.write(chunk)


@subscribers.command()
@click.argument("email")
@config_option
@audience_option
@click.option("--name", default="", help="Display name.")
@now_option
def add(email: str, config_path: Path, audiences: tuple[str, ...], name: str, now_text: str | None) -> None:
    """Add EMAIL (active) to the --audience ones."""
    from .store import InvalidEmailError

    config = _load(config_path)
    if not audiences:
        _fail("give at least one --audience", EXIT_CONFIG)
    _audience_ids(config, audiences)
    now = parse_now(now_text, config.site.timezone)
    with open_store(config) as store:
        try:
            change = store.add_subscriber(email, name, audiences, now)
        except InvalidEmailError as exc:
            _fail(str(exc))
    detail = f" ({change.reason})" if change.reason else ""
    click.echo(f"{change.email}: {change.action}{detail}")
    if change.action == "skipped":
        sys.exit(EXIT_PROBLEMS)


@subscribers.command()
@click.argument("email")
@config_option
@audience_option
@now_option
def remove(email: str, config_path: Path, audiences: tuple[str, ...], now_text: str | None) -> None:
    """Unsubscribe EMAIL from the --audience ones, or from everything without --audience."""
    from .store import InvalidEmailError

    config = _load(config_path)
    _audience_ids(config, audiences)
    now = parse_now(now_text, config.site.timezone)
    with open_store(config) as store:
        try:
            changes = [store.remove_subscriber(email, now, a) for a in audiences] or [
                store.remove_subscriber(email, now)
            ]
        except InvalidEmailError as exc:
            _fail(str(exc))
    for change in changes:
        detail = f" ({change.reason})" if change.reason else ""
        click.echo(f"{change.email}: {change.action}{detail}")
    if any(c.reason == "not found" for c in changes):
        sys.exit(EXIT_PROBLEMS)


@subscribers.command("list")
@config_option
@audience_option
@click.option("--status", type=click.Choice(["pending", "active", "unsubscribed", "bounced", "complained"]), help="Only subscribers with this status.")
def list_(config_path: Path, audiences: tuple[str, ...], status: str | None) -> None:
    """List subscribers: email, name, status."""
    config = _load(config_path)
    wanted = _audience_ids(config, audiences)
    with open_store(config) as store:
        for subscriber in _subscribers_of(store, wanted, status):
            click.echo(f"{subscriber.email}\t{subscriber.name}\t{subscriber.status}")


def _subscribers_of(store: Store, audiences: tuple[str, ...], status: str | None) -> Iterator[Subscriber]:
    """Subscribers of any of the audiences (all without any), each once, streamed."""
    seen: set[int] = set()
    for audience in audiences or (None,):
        for subscriber in store.list_subscribers(audience=audience, status=status):
            if subscriber.id not in seen:
                seen.add(subscriber.id)
                yield subscriber


@subscribers.command()
@config_option
def count(config_path: Path) -> None:
    """Active subscribers per audience."""
    config = _load(config_path)
    with open_store(config) as store:
        counts = store.count_by_audience()
    for audience in config.audiences:
        click.echo(f"{audience.id}\t{counts.get(audience.id, 0)}")


@subscribers.command("unsubscribe-mail")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True))
@config_option
@now_option
def unsubscribe_mail(sources: tuple[Path, ...], config_path: Path, now_text: str | None) -> None:
    """Act on the unsubscribe requests mailed to the List-Unsubscribe mailto address.

    Each SOURCE is a Maildir (its unread messages, in new/, are handled and then moved to cur/
    flagged seen), one message file, or - for one message on stdin (for a mail server that
    pipes each message to this command). Every message gets a line: what it did. Exit 0 when
    every message was handled (one without a valid token is reported, not retried), 1 when a
    source could not be read, 75 (EX_TEMPFAIL) when the store failed: the rest stay unread
    and a mail server tries a piped message again later.
    """
    from .errors import StoreError
    from .store import Store
    from .tokens import secret_key_from_env
    from .unsubscribe_mail import OUTCOMES, handle, parse

    config = _load(config_path)
    now = parse_now(now_text, config.site.timezone)
    try:
        key = secret_key_from_env()
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    try:
        store = Store.open(config.store_url)
    except NewsletterError as exc:
        _fail(f"store {config.store_url}: {exc}", EXIT_TEMPFAIL)
    unreadable = 0
    counts: dict[str, int] = {}
    try:
        for source in sources:
            try:
                for name, read, done in _request_messages(source):
                    try:
                        handled = handle(store, key, parse(read()), now)
                    except OSError as exc:
                        click.echo(f"error: {name}: cannot be read: {exc.strerror or exc}", err=True)
                        unreadable += 1
                        continue
                    except StoreError as exc:
                        _fail(f"{name}: {exc}; left for the next run", EXIT_TEMPFAIL)
                    click.echo(f"{name}: {handled.describe()}")
                    counts[handled.outcome] = counts.get(handled.outcome, 0) + 1
                    try:
                        done()
                    except OSError as exc:  # handled; it will be handled again next time
                        click.echo(f"error: {name}: cannot be marked as read: {exc}", err=True)
                        unreadable += 1
            except OSError as exc:  # the source itself: missing, or a folder that is no Maildir
                click.echo(f"error: {exc}", err=True)
                unreadable += 1
    finally:
        store.close()
    summary = ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES if outcome in counts)
    total = sum(counts.values())
    click.echo(f"{total} request{'' if total == 1 else 's'}" + (f": {summary}" if summary else ""), err=True)
    if unreadable:
        sys.exit(EXIT_PROBLEMS)


def _request_messages(source: Path) -> Iterator[tuple[str, Callable[[], bytes], Callable[[], object]]]:
    """(name, read the message, mark it handled) for each message of one SOURCE.

    Raises:
        OSError: the source is missing, or a folder that is not a Maildir.
    """
    from .unsubscribe_mail import maildir_new, mark_handled

    if str(source) == "-":
        yield "stdin", sys.stdin.buffer.read, lambda: None
    elif source.is_dir():
        for path in maildir_new(source):
            yield str(path), path.read_bytes, functools.partial(mark_handled, path)
    elif source.exists():
        yield str(source), source.read_bytes, lambda: None
    else:
        raise FileNotFoundError(f"{source}: no such message file or Maildir")


# --- send ----------------------------------------------------------------------------------------
@click.command()
@click.argument("audience_id", metavar="AUDIENCE")
@config_option
@click.option("--period", metavar="KEY", help="Issue period, e.g. 2026-W48 (weekly), 2026-11-30 (daily), 2026-11 (monthly). Default: the one containing --now.")
@now_option
@click.option("--dry-run", is_flag=True, help="Show what would be sent; change nothing.")
@click.option("--test-to", metavar="ADDR", help="Send one test message (subject marked [TEST]) to ADDR; record nothing.")
@click.option("--retry-unknown", is_flag=True, help="Also send to deliveries whose outcome is unknown after a crash (they may get it twice).")
def send(
    audience_id: str,
    config_path: Path,
    period: str | None,
    now_text: str | None,
    dry_run: bool,
    test_to: str | None,
    retry_unknown: bool,
) -> None:
    """Send AUDIENCE's issue for the period to every active subscriber, exactly once.

    Creates the issue (rendered once) or resumes it; recipients are frozen when it starts;
    unsubscribes count up to the moment of sending. Exit 0 when the issue is sent (or skipped as
    empty, or already sent), 1 when it paused, was stopped, is busy elsewhere or failed.
    """
    import re

    from .campaign import period_of
    from .schedules import parse_schedule

    config = _load(config_path)
    audience = _audience(config, audience_id)
    now = parse_now(now_text, config.site.timezone)
    kind = parse_schedule(audience.schedule or "mon 00:00").period
    if period is None:
        period = period_of(config, audience, now)
    elif not re.match(_PERIOD_SHAPES[kind], period):
        _fail(f"--period {period!r}: {audience.id} is {kind}ly; write it like {_PERIOD_EXAMPLES[kind]}", EXIT_CONFIG)
    catalog = _catalog(config)
    if catalog.problems:
        click.echo(f"skipped {len(catalog.problems)} article(s) with problems:", err=True)
        _report_problems(catalog.problems)
    with open_store(config) as store:
        if test_to:
            _send_test(config, audience, period, now, store, catalog, test_to)
        elif dry_run:
            _dry_run(config, audience, period, now, store, catalog)
        else:
            report = _send_real(config, audience, period, now, store, catalog, retry_unknown)
            _print_report(report)
            if report.status not in ("sent", "skipped", "already sent"):
                sys.exit(EXIT_PROBLEMS)
    catalog.save_index()


def _send_real(
    config: Config,
    audience: AudienceConfig,
    period: str,
    now: datetime,
    store: Store,
    catalog: Catalog,
    retry_unknown: bool,
) -> SendReport:
    from .sending import deliver_period, options_from
    from .services import make_transport
    from .tokens import secret_key_from_env

    try:
        key = secret_key_from_env()
        transport = make_transport(config)  # a missing SMTP credential is a config error up front
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    stop = threading.Event()
    try:
        with _progress_bar(f"{audience.id} {period}") as progress, _stop_on_signals(stop):
            return deliver_period(
                config, audience, period, now, store, catalog.articles, catalog.rendered, key,
                options_from(config, retry_unknown=retry_unknown), lambda: transport,
                now=now, progress=progress, stop=stop,
            )
    except NewsletterError as exc:
        _fail(str(exc))
    finally:
        transport.close()  # idempotent; deliver_period closes it too when it sent


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar with rate and ETA on stderr, shown once there is something to send."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(label, total=None, rate="")
    first: list[tuple[float, int]] = []

    def update(done: int, total: int) -> None:
        clock = time.monotonic()
        if not first:
            if done >= total:
                return  # nothing left to send: no bar
            first.append((clock, done))
            bar.start()
        start_clock, start_done = first[0]
        rate = (done - start_done) / (clock - start_clock) if clock > start_clock else 0.0
        bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} msg/s")

    try:
        yield update
    finally:
        if first:
            bar.stop()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT: finish the messages in flight, record them, stop claiming, exit cleanly."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        stop.set()
        click.echo(f"\nsignal {signum}: finishing the messages in flight, then stopping", err=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_report(report: SendReport) -> None:
    counts = report.counts
    if report.status == "skipped" and not counts:
        click.echo(f"{report.audience_id} {report.period}: skipped, {report.message or 'nothing to send'}")
        return
    click.echo(
        f"{report.audience_id} {report.period}: {report.status}"
        + (f" ({report.message})" if report.message else "")
        + f"; {counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, "
        f"{counts.get('suppressed', 0)} suppressed, {counts.get('unknown', 0)} unknown, "
        f"{counts.get('queued', 0)} still queued"
        + (f", {counts['sending']} being sent" if counts.get("sending") else "")
        + (f" (through {report.senders})" if report.senders else "")
    )
    if report.marked_unknown:
        click.echo(
            f"  {report.marked_unknown} deliveries were in flight when an earlier run stopped: "
            "marked unknown, not re-sent (use --retry-unknown to send them again)",
            err=True,
        )


def _dry_run(
    config: Config, audience: AudienceConfig, period: str, now: datetime, store: Store, catalog: Catalog
) -> None:
    from .campaign import digest_settings, render_issue
    from .sending import plan_next

    issue = store.get_issue(audience.id, period)
    if issue is not None and issue.status != "draft":
        counts = store.delivery_counts(issue.id)
        click.echo(f"{audience.id} {period}: issue {issue.id} is {issue.status}: {issue.subject!r}; " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        return
    plan = plan_next(store, audience, catalog.articles, now)
    recipients = store.count_by_audience().get(audience.id, 0)
    if plan.empty:
        verdict = "would be skipped (empty)" if audience.skip_if_empty else "would fail: empty and skip_if_empty = false"
        click.echo(f"{audience.id} {period}: no new articles since {plan.period_start.isoformat()}; {verdict}")
        return
    digest = render_issue(plan, catalog.rendered, digest_settings(config))
    click.echo(f"{audience.id} {period}: would send {digest.subject!r} ({len(plan.articles)} article(s)) to {recipients} active subscriber(s)")
    for article in plan.articles:
        click.echo(f"  {article.published.astimezone(config.site.tz):%Y-%m-%d %H:%M}  {article.title}")


def _send_test(
    config: Config,
    audience: AudienceConfig,
    period: str,
    now: datetime,
    store: Store,
    catalog: Catalog,
    address: str,
) -> None:
    from .campaign import digest_settings, message_template, render_issue
    from .model import Issue
    from .sending import Personalizer, plan_next, stored_digest
    from .services import make_transport
    from .store import InvalidEmailError, normalize_email

    try:
        address = normalize_email(address)
    except InvalidEmailError as exc:
        _fail(f"--test-to: {exc}", EXIT_CONFIG)
    issue = store.get_issue(audience.id, period)
    if issue is not None and issue.html:
        digest = stored_digest(config, issue)
    else:
        plan = plan_next(store, audience, catalog.articles, now)
        if plan.empty:
            _fail(f"{audience.id} {period}: no new articles, nothing to test")
        digest = render_issue(plan, catalog.rendered, digest_settings(config))
        issue = Issue(0, audience.id, period, "draft", plan.period_start, plan.period_end, now)
    template = message_template(config, audience, digest, subject_prefix="[TEST] ")
    personalizer = Personalizer(config, issue, template, None)
    message = personalizer.compose(0, address, "Test", now)
    try:
        transport = make_transport(config)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    try:
        transport.send(template.sender_address, address, message, personalizer.message_id(0))
    except NewsletterError as exc:
        _fail(f"test message not sent: {exc}")
    finally:
        transport.close()
    click.echo(f"test message {template.subject!r} sent to {address}; nothing recorded")


# --- schedule ------------------------------------------------------------------------------------
@click.command()
@config_option
@click.option("--at", "at_text", metavar="TIME", help="Plan as of this moment (ISO 8601; no zone = site timezone). Default: now.")
@click.option("--audience", "audience_id", metavar="ID", help="Only this audience.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (ISO 8601 times with UTC offsets).")
def plan(config_path: Path, at_text: str | None, audience_id: str | None, as_json: bool) -> None:
    """What goes out when: per audience the next send times (local and UTC), the period, the
    articles, the subject, the recipient count, whether it would be skipped, and runs that were
    missed. Changes nothing."""
    import json

    from .planner import format_plan, plan_audience

    config = _load(config_path)
    at = parse_now(at_text, config.site.timezone)
    audiences = [_audience(config, audience_id)] if audience_id else list(config.audiences)
    catalog = _catalog(config)
    counts: dict[str, int] = {}
    issues: dict[str, list[Issue]] = {a.id: [] for a in audiences}
    if _store_exists(config):
        with open_store(config) as store:
            counts = store.count_by_audience()
            for audience in audiences:
                issues[audience.id] = list(store.list_issues(audience.id))
    plans = [
        plan_audience(config, a, catalog.articles, at, counts.get(a.id, 0), issues[a.id])
        for a in audiences
    ]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in plans], ensure_ascii=False, indent=2))
        return
    tz = config.site.tz
    for index, item in enumerate(plans):
        if index:
            click.echo()
        for line in format_plan(item, lambda t: f"{t.astimezone(tz):%a %Y-%m-%d %H:%M %Z}"):
            click.echo(line)


def _store_exists(config: Config) -> bool:
    """`plan` must not create the database: with no SQLite file there is nothing to read."""
    if config.store_url.startswith("sqlite:///"):
        return Path(config.store_url.removeprefix("sqlite:///")).exists()
    return True


@click.command()
@config_option
@click.option("--standby-poll", type=click.FloatRange(min=0.1), default=15.0, show_default=True, metavar="SECONDS", help="How often a standby process checks whether the active scheduler is gone.")
def run(config_path: Path, standby_poll: float) -> None:
    """Run the scheduler until SIGTERM/SIGINT: every audience's digest at its scheduled local
    time, once. A second `newsletter run` on the same database stands by until the first stops."""
    from .schedule import run as run_scheduler
    from .services import make_transport
    from .tokens import secret_key_from_env

    config = _load(config_path)
    try:
        secret_key_from_env()
        make_transport(config).close()
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    log_to_stderr()
    run_scheduler(config, poll=standby_poll)


@click.command("scheduled-send", hidden=True)
@config_option
@click.argument("audience_id", metavar="AUDIENCE")
@click.option("--fire", required=True, metavar="WHEN", help="The scheduled fire time (ISO 8601) the period comes from.")
@click.option("--started", required=True, metavar="WHEN", help="When the scheduler started the job (ISO 8601).")
def scheduled_send(config_path: Path, audience_id: str, fire: str, started: str) -> None:
    """The scheduler's job for one audience, in a process of its own: `newsletter run` starts it
    for each scheduled send over SMTP (so that it can fork one sending process per connection).
    SIGTERM/SIGINT finish the messages in flight, then stop."""
    import signal
    from datetime import datetime

    from .schedule import send_scheduled

    config = _load(config_path)
    log_to_stderr()
    try:
        when = datetime.fromisoformat(fire), datetime.fromisoformat(started)
    except ValueError as exc:
        _fail(f"--fire/--started: {exc}", EXIT_CONFIG)
    stop = threading.Event()
    with _stop_on_signals(stop):
        # `newsletter run` starts this process with them blocked, until the handler above is set
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            send_scheduled(config, audience_id, *when, stop)
        except NewsletterError:
            sys.exit(1)  # logged by send_scheduled
