#!/usr/bin/env python3
"""Benchmark `newsletter send`: subscribers -> SMTP sink on 127.0.0.1, against the sink's ceiling.

    python bench/send.py [--sizes 10000,100000] [--connections 1,2] [--runs 3] [--sink asyncio]
                         [--batch-size N] [--against CHECKOUT] [--profile DIR]

For each size N a copy of the sample site (content, templates, config.toml with
`[delivery] transport = "smtp"` pointed at the sink) gets N active `beslissers` subscribers
(user{i}@example.nl, through `Store.import_rows`, once; each run sends from a fresh copy of that
database, so every run creates, renders and sends a new issue). Then, per connection count and
run:

- ceiling: a fresh process replays one pre-built message of the same issue (the bytes
  `Personalizer.compose` gives, in wire format) N times over the same number of connections
  (one thread each, raw sockets, the same exchange as the transport: when the sink offers
  PIPELINING, MAIL, RCPT and DATA in one write and each message written together with the next
  envelope, one round trip per message; else a command at a time), so it measures what the
  sink and loopback allow a Python SMTP client with nothing else to do;
- send: `python -m newsletter send beslissers --now 2026-11-30T08:00` in a fresh process.

`--batch-size N` sets `delivery.batch_size` (the in-flight window; default 50). `--against
CHECKOUT` (e.g. one made with `git worktree add ../before <commit>`) also sends with that
checkout's code (through PYTHONPATH, byte-compiled too) in every run, the two taking turns,
and prints both medians: this machine's speed drifts more than most changes are worth.

The sink (`bench/smtp_sink.py`, its own process, `--sink asyncio` by default: a minimal
asyncio.Protocol responder; `--sink aiosmtpd` for aiosmtpd) timestamps the first and last message
it accepts: msg/s is (N - 1) / (last - first) for both, so start-up (imports, reading the
articles, rendering the issue, freezing N recipients) is not in it; "wall" is the whole send
command and "e2e msg/s" N / wall. Peak RSS is ru_maxrss from os.wait4: the largest resident set
among the command's process and its sending processes (which it waits for).
Compose cost: `Personalizer.compose` (token + links + `MessageTemplate.compose`) and
`MessageTemplate.compose` alone, each call timed on its own over --compose-calls distinct
subscribers of the issue just sent; median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import pyspy  # noqa: E402 - bench/pyspy.py, beside this file
from run import byte_compile  # noqa: E402 - bench/run.py, beside this file

REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
from configtext import smtp_tables, without_tables  # noqa: E402 - tests/configtext.py, shared with the tests

AUDIENCE = "beslissers"
SEND_NOW = "2026-11-30T08:00"
SECRET = "bench-secret-key-0123456789abcdef0123456789"
SENDER = "nieuwsbrief@ai-nieuws.example.nl"


# --- the sink process ----------------------------------------------------------------------------
class Sink:
    """bench/smtp_sink.py in another process, driven over its stdin/stdout."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "smtp_sink.py"), "--kind", kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"the sink did not start: {line!r}")
        self.port = int(line.split()[1])

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def reset(self) -> None:
        assert self._ask("reset") == "ok"

    def stats(self) -> tuple[int, float]:
        """(messages, seconds from the first to the last) since the last reset."""
        messages, _bytes, first, last = self._ask("stats").split()
        if first == "-":
            return 0, 0.0
        return int(messages), float(last) - float(first)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the site ------------------------------------------------------------------------------------
def write_config(site: Path, port: int, connections: int, batch_size: int | None = None) -> Path:
    text = without_tables((REPO / "config.toml").read_text(encoding="utf-8"),
                           {"delivery", "delivery.smtp", "store"})
    delivery = f"batch_size = {batch_size}" if batch_size else ""
    text += smtp_tables(port, connections, timeout=30, delivery=delivery)
    text += '\n[store]\nurl = "sqlite:///newsletter.db"\n'
    path = site / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def make_base(site: Path, size: int, port: int) -> float:
    """The site with `size` subscribers in base.db; returns the import's seconds."""
    from newsletter.config import load_config
    from newsletter.model import ImportRow
    from newsletter.store import Store

    shutil.copytree(REPO / "content", site / "content")
    shutil.copytree(REPO / "templates", site / "templates")
    config = load_config(write_config(site, port, 1))
    rows = (ImportRow(f"user{i}@example.nl", f"User {i}", (AUDIENCE,)) for i in range(size))
    start = time.perf_counter()
    with Store.open(config.store_url) as store:
        result = store.import_rows(rows, datetime(2026, 11, 27, tzinfo=UTC), batch_size=2000)
    seconds = time.perf_counter() - start
    assert result.added == size, result
    (site / "newsletter.db").rename(site / "base.db")
    return seconds


def fresh_database(site: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (site / f"newsletter.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(site / "base.db", site / "newsletter.db")


def send_env(project: Path | None = None) -> dict[str, str]:
    """The environment of a send; with `project`, that checkout's code is imported."""
    env = dict(os.environ)
    env["NEWSLETTER_SECRET_KEY"] = SECRET
    if project is not None:
        env["PYTHONPATH"] = str(project)
    return env


# --- one send ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    wall: float  # seconds, the whole command
    rate: float  # messages per second, sink-side first to last
    peak_rss: float  # MB, ru_maxrss of the process


def wait_rusage(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Reap the child with wait4: (exit code, its peak RSS in MB)."""
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def run_send(
    site: Path, sink: Sink, size: int, profile: Path | None = None, project: Path | None = None
) -> Measured:
    fresh_database(site)
    sink.reset()
    command = [sys.executable, "-m", "newsletter", "send", AUDIENCE, "--now", SEND_NOW,
               "--config", str(site / "config.toml")]
    if profile is not None:  # py-spy around it, recording every process of the send
        command = ["py-spy", "record", "--subprocesses", "--rate", str(pyspy.RATE), "--format",
                   "raw", "--output", str(profile), "--", *command]
    with (site / "send.out").open("wb") as out, (site / "send.err").open("wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=site, env=send_env(project), stdout=out, stderr=err)
        code, rss = wait_rusage(process)
        wall = time.perf_counter() - start
    output = (site / "send.out").read_text(encoding="utf-8")
    if code != 0 or f"sent; {size} sent," not in output:
        raise SystemExit(f"send failed (exit {code}):\n{output}\n"
                         + (site / "send.err").read_text(encoding="utf-8")[-3000:])
    messages, span = sink.stats()
    if messages != size:
        raise SystemExit(f"the sink got {messages} messages, expected {size}")
    return Measured(wall, (messages - 1) / span if span > 0 else float("nan"), rss)


def run_ceiling(message: Path, sink: Sink, size: int, connections: int) -> Measured:
    sink.reset()
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "send.py"), "--replay", str(message), "--port", str(sink.port),
         "--count", str(size), "--replay-connections", str(connections)],
    )
    code, rss = wait_rusage(process)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the replay client failed (exit {code})")
    messages, span = sink.stats()
    if messages != size:
        raise SystemExit(f"the sink got {messages} replayed messages, expected {size}")
    return Measured(wall, (messages - 1) / span if span > 0 else float("nan"), rss)


def replay(message: Path, port: int, count: int, connections: int) -> None:
    """The ceiling client: `count` copies of one message over `connections` connections, on raw
    sockets with the least work per message. It speaks the transport's exchange: with
    PIPELINING the envelope in one write and each message written with the next envelope (RFC
    2920 lets message content open a group), so one round trip per message; without it, a
    command at a time. The envelopes are made before the first message; each message and the
    next envelope go out in one `sendmsg` (no copy of the message), and the replies are read
    as they come, a recv at a time, counting final reply lines."""
    data = message.read_bytes()  # already in wire format (CRLF, no dot to stuff, ending ".\r\n")
    shares = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]
    starts = [sum(shares[:i]) for i in range(connections)]
    errors: list[BaseException] = []

    def client(first: int, share: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            pending = b""
            text: list[bytes] = []  # the lines of the reply being read

            def replies(wanted: int) -> list[tuple[int, bytes]]:
                """The next `wanted` replies: (code, all their lines)."""
                nonlocal pending
                got: list[tuple[int, bytes]] = []
                while True:
                    lines = pending.split(b"\r\n")
                    pending = lines.pop()  # an incomplete last line, or b""
                    for line in lines:
                        text.append(line)
                        if line[3:4] != b"-":  # the last line of a reply
                            got.append((int(line[:3]), b"\n".join(text)))
                            text.clear()
                    if len(got) >= wanted:
                        if len(got) > wanted:
                            raise RuntimeError(f"unexpected replies: {got}")
                        return got
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise RuntimeError("the sink closed the connection")
                    pending += chunk

            def codes(wanted: int) -> list[int]:
                return [code for code, _ in replies(wanted)]

            def send_both(message: bytes, following: bytes) -> None:
                sent = sock.sendmsg([message, following])  # no copy of the message
                if sent < len(message) + len(following):  # the rest, if the kernel took less
                    sock.sendall((message + following)[sent:])

            codes(1)
            sock.sendall(b"EHLO bench.localhost\r\n")
            ((_, ehlo),) = replies(1)
            pipelining = b"PIPELINING" in ehlo.upper()
            envelopes = [
                f"MAIL FROM:<{SENDER}> SIZE={len(data)}\r\nRCPT TO:<user{number}@example.nl>\r\nDATA\r\n".encode()
                for number in range(first, first + share)
            ]
            if pipelining:
                sock.sendall(envelopes[0])
                if codes(3) != [250, 250, 354]:
                    raise RuntimeError("envelope refused")
                for following in [*envelopes[1:], b""]:
                    send_both(data, following)
                    if codes(4 if following else 1) != ([250, 250, 250, 354] if following else [250]):
                        raise RuntimeError("message or envelope refused")
            else:
                for envelope in envelopes:
                    for command in envelope.split(b"\r\n")[:3]:
                        sock.sendall(command + b"\r\n")
                        if codes(1)[0] not in (250, 354):
                            raise RuntimeError(f"{command!r} refused")
                    sock.sendall(data)
                    if codes(1) != [250]:
                        raise RuntimeError("message refused")
            sock.sendall(b"QUIT\r\n")
            codes(1)
            sock.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s, n)) for s, n in zip(starts, shares, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"replay failed: {errors[0]!r}")


# --- compose cost --------------------------------------------------------------------------------
def compose_costs(site: Path, calls: int, message_out: Path | None = None) -> tuple[float, float, int]:
    """Median µs of Personalizer.compose and of MessageTemplate.compose (one call timed at a
    time, distinct subscribers) on the issue in site/newsletter.db, and the message size."""
    from newsletter.campaign import message_template
    from newsletter.config import load_config
    from newsletter.delivery.smtp import _wire_format
    from newsletter.sending import Personalizer, stored_digest
    from newsletter.store import Store

    config = load_config(site / "config.toml")
    audience = config.audience(AUDIENCE)
    with Store.open(config.store_url) as store:
        (issue,) = store.list_issues(AUDIENCE)
        people = [(d.subscriber_id, d.email, d.name) for d in store.list_deliveries(issue.id)][:calls]
    template = message_template(config, audience, stored_digest(config, issue))
    personalizer = Personalizer(config, issue, template, SECRET.encode())
    date = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    first = personalizer.compose(people[0][0], people[0][1], people[0][2], date)
    if message_out is not None:
        message_out.write_bytes(_wire_format(first))
    clock = time.perf_counter
    full: list[float] = []
    for subscriber_id, email, name in people:
        start = clock()
        personalizer.compose(subscriber_id, email, name, date)
        full.append(clock() - start)
    # the template alone, with the per-subscriber values computed outside the timing
    values = [
        dict(to_email=email, to_name=name, message_id=personalizer.message_id(sid), date=date,
             unsubscribe_url=f"https://ai-nieuws.example.nl/afmelden/{personalizer.token(sid)}",
             unsubscribe_mailto="mailto:afmelden@ai-nieuws.example.nl",
             view_url="https://ai-nieuws.example.nl/archief/beslissers/2026-W49/")
        for sid, email, name in people
    ]
    bare: list[float] = []
    compose = template.compose
    for kwargs in values:
        start = clock()
        compose(**kwargs)  # type: ignore[arg-type]
        bare.append(clock() - start)
    return statistics.median(full) * 1e6, statistics.median(bare) * 1e6, len(first)


# --- report --------------------------------------------------------------------------------------
def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="subscribers, comma-separated")
    parser.add_argument("--connections", default="1,2", help="SMTP connections, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", choices=["asyncio", "aiosmtpd"], default="asyncio")
    parser.add_argument("--compose-calls", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, help="delivery.batch_size (default: the config's, 50)")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="also send with this checkout's code in every run, alternating")
    parser.add_argument("--profile", metavar="DIR",
                        help="also profile one extra send per size and connection count with py-spy "
                             "(every process: the ledger and the sending processes) into DIR")
    parser.add_argument("--keep", metavar="DIR", help="build the sites in DIR and keep them")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here (bench/run.py)")
    # internal modes
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--replay-connections", type=int, default=1, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.replay:
        replay(args.replay, args.port, args.count, args.replay_connections)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    sizes = [int(s) for s in args.sizes.split(",")]
    connection_counts = [int(c) for c in args.connections.split(",")]
    byte_compile(REPO)
    against = args.against.resolve() if args.against else None
    if against is not None:
        byte_compile(against)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-send-"))
    root.mkdir(parents=True, exist_ok=True)
    sink = Sink(args.sink)
    print(f"sink: bench/smtp_sink.py --kind {args.sink} (pid {sink.process.pid}, port {sink.port}); "
          f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
    rows: list[str] = []
    results: dict[str, object] = {"runs": args.runs, "sends": []}
    compose_line = ""
    profiles: list[str] = []
    comparisons: list[str] = []
    try:
        for size in sizes:
            site = root / f"n{size}"
            if site.exists():
                shutil.rmtree(site)
            site.mkdir()
            seconds = make_base(site, size, sink.port)
            print(f"{size} subscribers imported in {seconds:.1f} s", flush=True)
            message = site / "message.eml"
            for connections in connection_counts:
                write_config(site, sink.port, connections, args.batch_size)
                sends: list[Measured] = []
                others: list[Measured] = []  # --against
                ceilings: list[Measured] = []
                for run in range(args.runs):
                    send_first = not message.exists()  # the ceiling replays a message it sent
                    if send_first:
                        sends.append(run_send(site, sink, size))
                        compose_costs(site, 10, message)
                    ceilings.append(run_ceiling(message, sink, size, connections))
                    if against is not None and run % 2 == 0:
                        others.append(run_send(site, sink, size, project=against))
                    if not send_first:
                        sends.append(run_send(site, sink, size))
                    if against is not None and run % 2 == 1:
                        others.append(run_send(site, sink, size, project=against))
                    other = f", against {others[-1].rate:,.0f} msg/s" if others else ""
                    print(f"  n={size} c={connections} run {run + 1}: send {sends[-1].wall:.2f} s, "
                          f"{sends[-1].rate:,.0f} msg/s{other}, ceiling {ceilings[-1].rate:,.0f} msg/s, "
                          f"peak RSS {sends[-1].peak_rss:.0f} MB", flush=True)
                if others:
                    mine, theirs = (statistics.median(m.rate for m in group) for group in (sends, others))
                    comparisons.append(
                        f"{size:>11,} | {connections:>5} | {spread([m.rate for m in others], lambda v: f'{v:,.0f}'):>21} | "
                        f"{spread([m.rate for m in sends], lambda v: f'{v:,.0f}'):>21} | {(mine / theirs - 1) * 100:+6.1f}%"
                    )
                if args.profile:
                    folder = Path(args.profile)
                    folder.mkdir(parents=True, exist_ok=True)
                    target = folder / f"send-n{size}-c{connections}.txt"
                    run_send(site, sink, size, profile=target)
                    profiles.append(f"profile of one send, n={size} c={connections} ({target}):\n"
                                    + pyspy.summary(target, top=8))
                ratios = [s.rate / c.rate for s, c in zip(sends, ceilings, strict=True)]
                results["sends"].append({  # type: ignore[attr-defined]
                    "subscribers": size, "connections": connections,
                    "wall_s": [s.wall for s in sends], "rate": [s.rate for s in sends],
                    "ceiling": [c.rate for c in ceilings], "ratio": ratios,
                    "peak_rss_mb": [s.peak_rss for s in sends],
                })
                rows.append(
                    f"{size:>11,} | {connections:>5} | {spread([s.wall for s in sends], lambda v: f'{v:.2f}'):>19} | "
                    f"{spread([s.rate for s in sends], lambda v: f'{v:,.0f}'):>21} | "
                    f"{spread([size / s.wall for s in sends], lambda v: f'{v:,.0f}'):>21} | "
                    f"{spread([c.rate for c in ceilings], lambda v: f'{v:,.0f}'):>21} | "
                    f"{spread([r * 100 for r in ratios], lambda v: f'{v:.0f}'):>12} | "
                    f"{spread([s.peak_rss for s in sends], lambda v: f'{v:.0f}'):>13}"
                )
            if not compose_line:
                full, bare, length = compose_costs(site, args.compose_calls)
                results.update(compose_us=full, template_compose_us=bare, message_kb=length / 1024)
                compose_line = (
                    f"compose per message ({length / 1024:.1f} KB message, median of "
                    f"{min(args.compose_calls, size):,} calls): Personalizer.compose {full:.1f} µs "
                    f"(token + links + template), MessageTemplate.compose {bare:.1f} µs"
                )
    finally:
        sink.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    runs = f"median (min-max) of {args.runs} runs" if args.runs > 1 else "1 run"
    print()
    print(f"newsletter send -> {args.sink} sink on 127.0.0.1 (other process); {runs}")
    print("msg/s: sink-side, first to last message; e2e: subscribers / wall of the whole command; "
          "ratio: msg/s / ceiling")
    print(f"{'subscribers':>11} | {'conns':>5} | {'send wall s':>19} | {'msg/s':>21} | "
          f"{'e2e msg/s':>21} | {'ceiling msg/s':>21} | {'ratio %':>12} | {'peak RSS MB':>13}")
    for row in rows:
        print(row)
    print(compose_line)
    if comparisons:
        print(f"\nalternating with {against} ({runs}): msg/s of its code, then of this checkout's")
        print(f"{'subscribers':>11} | {'conns':>5} | {'against':>21} | {'this':>21} | change")
        for row in comparisons:
            print(row)
    for text in profiles:
        print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
