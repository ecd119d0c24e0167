#!/usr/bin/env python3
"""A loopback SMTP sink for benchmarks: accepts every message, counts it and throws it away.

    python bench/smtp_sink.py [--port 0] [--kind asyncio|aiosmtpd]

Prints "PORT <n>" on stdout once it listens on 127.0.0.1. Then it answers lines on stdin:
"stats" -> "<messages> <bytes> <first> <last>" (time.monotonic() of the first and the last message
accepted since the last reset; "-" when none), "reset" -> "ok". End of stdin ends the sink.

--kind asyncio (default) is a minimal responder on an asyncio.Protocol: EHLO/HELO, MAIL, RCPT,
DATA, RSET, NOOP, QUIT, with the data phase found by one bytes.find per chunk. It exists because
aiosmtpd (--kind aiosmtpd, a full server: command parsing, envelope objects, a coroutine per line)
costs more CPU per message than the client under test, so it would measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

_EHLO = (
    b"250-sink.localhost\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
    b"250-8BITMIME\r\n250 SMTPUTF8\r\n"
)
_END = b"\r\n.\r\n"


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, size: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.messages += 1
        self.bytes += size

    def line(self) -> str:
        first = "-" if self.first is None else f"{self.first:.6f}"
        last = "-" if self.last is None else f"{self.last:.6f}"
        return f"{self.messages} {self.bytes} {first} {last}"


class SinkProtocol(asyncio.Protocol):
    """One SMTP session. Commands are answered as they come (pipelining works too)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.localhost ESMTP bench sink\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        replies: list[bytes] = []
        position = 0
        while position < len(buffer):
            if self.in_data:
                if self.size == 0 and buffer.startswith(b".\r\n", position):
                    end, after = position, position + 3  # an empty message
                else:
                    found = buffer.find(_END, position)
                    if found < 0:
                        # keep the last 4 bytes: the end marker may straddle two chunks
                        keep = max(position, len(buffer) - 4)
                        self.size += keep - position
                        position = keep
                        break
                    end, after = found + 2, found + 5
                self.size += end - position
                self.stats.add(self.size)
                self.in_data = False
                self.size = 0
                position = after
                replies.append(b"250 2.0.0 OK: discarded\r\n")
                continue
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                break
            command = buffer[position : position + 4].upper()
            position = line_end + 2
            if command in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                replies.append(b"250 2.0.0 OK\r\n")
            elif command == b"DATA":
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
                self.size = 0
            elif command == b"EHLO":
                replies.append(_EHLO)
            elif command == b"HELO":
                replies.append(b"250 sink.localhost\r\n")
            elif command == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
                assert self.transport is not None
                self.transport.write(b"".join(replies))
                self.transport.close()
                self.buffer = b""
                return
            else:
                replies.append(b"502 5.5.2 Command not implemented\r\n")
        self.buffer = buffer[position:]
        if replies:
            assert self.transport is not None
            self.transport.write(b"".join(replies))


class AiosmtpdHandler:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.stats.add(len(envelope.original_content or b""))
        return "250 2.0.0 OK: discarded"


async def serve(port: int, kind: str) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    if kind == "asyncio":
        server = await loop.create_server(lambda: SinkProtocol(stats), "127.0.0.1", port)
    else:
        from aiosmtpd.smtp import SMTP

        handler = AiosmtpdHandler(stats)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.localhost", data_size_limit=None),
            "127.0.0.1",
            port,
        )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with server:
        while True:
            line = await reader.readline()
            if not line:
                break
            command = line.strip().decode()
            if command == "stats":
                print(stats.line(), flush=True)
            elif command == "reset":
                stats.reset()
                print("ok", flush=True)
            elif command:
                print(f"unknown command {command!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kind", choices=["asyncio", "aiosmtpd"], default="asyncio")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.kind))


if __name__ == "__main__":
    main()
