"""A recording SMTP server on 127.0.0.1 for tests that drive `newsletter send` in a subprocess.

`RecordingSink` is an aiosmtpd handler that keeps, for every message it accepts, the envelope
recipient and the Message-ID header (not the body), optionally waits a little before its reply (so
that a kill can land while a message is in flight) and calls a hook with the running message count
(the fault tests use it to kill the sender at the k-th message). `running_sink` serves it on an
OS-chosen port of 127.0.0.1 in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)

Hook = Callable[[int], None]  # called with the count of messages accepted so far (1, 2, ...)


@dataclass(frozen=True)
class Received:
    recipient: str
    message_id: str
    mail_from: str
    size: int


class RecordingSink:
    """aiosmtpd handler: records (recipient, Message-ID) of each message, then replies 250.

    The message is recorded as soon as its data is complete, *before* the reply: from then on a
    real server may deliver it, so a sender that dies waiting for the reply must not send it again.
    """

    def __init__(self, delay: float = 0.0, pipelining: bool = True) -> None:
        self.delay = delay  # seconds between the end of DATA and the 250 reply
        self.pipelining = pipelining  # advertise RFC 2920 PIPELINING, as Postfix and Exim do
        self.on_message: Hook | None = None
        self._lock = threading.Lock()
        self._received: list[Received] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands one after the other, so it handles pipelined ones already
        return [responses[0], "250-PIPELINING", *responses[1:]] if self.pipelining else responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        header_end = data.find(b"\r\n\r\n")
        found = _MESSAGE_ID.search(data, 0, header_end if header_end >= 0 else len(data))
        message_id = found.group(1).decode("ascii", "replace") if found else ""
        with self._lock:
            for recipient in envelope.rcpt_tos:
                self._received.append(Received(recipient, message_id, envelope.mail_from, len(data)))
            count = len(self._received)
        hook = self.on_message
        if hook is not None:
            hook(count)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 OK: queued"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def duplicates(self) -> dict[str, int]:
        """Recipients and Message-IDs seen more than once, with how often."""
        received = self.received
        seen = Counter(r.recipient for r in received) + Counter(r.message_id for r in received)
        return {key: n for key, n in seen.items() if n > 1}


class _LocalController(Controller):
    """A Controller on an OS-chosen port (aiosmtpd 1.4 cannot report the port of port=0)."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@contextmanager
def running_sink(sink: RecordingSink | None = None) -> Iterator[tuple[RecordingSink, int]]:
    """Serve `sink` (default: a new one) on 127.0.0.1; yields (sink, port)."""
    sink = sink if sink is not None else RecordingSink()
    controller = _LocalController(sink, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield sink, int(controller.port)
    finally:
        controller.stop()


__all__ = ["Received", "RecordingSink", "running_sink"]
