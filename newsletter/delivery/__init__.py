"""Message transports: where composed messages go.

`Transport` is the seam the sending loop types against; `OutboxTransport` (the default: one
`.eml` file per message) and `SMTPTransport` implement it, and `MemoryTransport` is the honest
fake for tests. Only `make_transport` (called by the composition root) picks one.

A transport's `send` either returns (the message was handed over) or raises `DeliveryError`
whose `kind` tells the caller whether a retry is safe ("transient"), pointless ("permanent") or
may duplicate the message ("unknown"). A transport may also offer `stream` (see
`SMTPTransport.stream`): many messages over one connection, each answered in turn.
"""

from __future__ import annotations

import os
import re
import ssl as _ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from ..errors import DeliveryError

# What an envelope address may contain: no space, no control character, no angle bracket.
# Anything else could smuggle an SMTP command or break the outbox file.
_ENVELOPE_ADDRESS = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")


class Transport(Protocol):  # pragma: no cover - a Protocol has no behaviour
    """Hands one finished message to its next hop.

    `parallelism` is how many threads may usefully call `send` at once; `send` must then be
    thread-safe.
    """

    parallelism: int

    def send(self, sender: str, recipient: str, message: bytes, message_id: str) -> None:
        """Deliver message (CRLF bytes) from envelope sender to one envelope recipient.

        Raises:
            DeliveryError: not delivered, or unknown whether it was (see `kind`).
            ValueError: a malformed envelope address or Message-ID (a programming error).
        """
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


class Outgoing(NamedTuple):
    """One composed message for a transport's `stream`; `tag` is the caller's, given back."""

    recipient: str
    message: bytes
    message_id: str
    tag: object = None


class NotSent(Exception):
    """What a stream answers for a message it took but did not begin: it was told to stop."""


def check_envelope(sender: str, recipient: str) -> None:
    """Refuse envelope addresses that could inject SMTP commands or are obviously not addresses.

    Raises:
        ValueError: names the bad address.
    """
    for label, address in (("sender", sender), ("recipient", recipient)):
        if not _ENVELOPE_ADDRESS.fullmatch(address):
            raise ValueError(f"envelope {label} {address!r} is not a plain e-mail address")


@dataclass(frozen=True)
class SentMessage:
    """What `MemoryTransport` recorded for one send."""

    sender: str
    recipient: str
    message: bytes
    message_id: str


class MemoryTransport:
    """Keeps messages in a list; `failures` maps a recipient to the error to raise for it."""

    def __init__(
        self, failures: dict[str, DeliveryError] | None = None, parallelism: int = 1
    ) -> None:
        self.parallelism = parallelism
        self.failures = dict(failures or {})
        self.sent: list[SentMessage] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(self, sender: str, recipient: str, message: bytes, message_id: str) -> None:
        check_envelope(sender, recipient)
        error = self.failures.get(recipient)
        if error is not None:
            raise error
        with self._lock:
            self.sent.append(SentMessage(sender, recipient, message, message_id))

    def close(self) -> None:
        self.closed = True


TransportKind = Literal["outbox", "smtp"]


def make_transport(
    kind: TransportKind,
    *,
    outbox_dir: str | os.PathLike[str] | None = None,
    host: str = "localhost",
    port: int | None = None,
    starttls: bool = True,
    ssl: bool = False,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30.0,
    connections: int = 1,
    rate: float = 0.0,
    ssl_context: _ssl.SSLContext | None = None,
) -> Transport:
    """Build the configured transport.

    Args:
        kind: "outbox" (needs outbox_dir) or "smtp".
        port: None picks 465 with ssl, 587 with starttls, else 25 (standards SEC-07).
        The other arguments are those of `SMTPTransport`; the password comes from the
        environment (the caller reads it), never from config.toml.

    Raises:
        ValueError: an unknown kind or contradictory settings.
    """
    if kind == "outbox":
        if outbox_dir is None:
            raise ValueError("the outbox transport needs outbox_dir")
        from .outbox import OutboxTransport

        return OutboxTransport(Path(outbox_dir))
    if kind == "smtp":
        from .smtp import SMTPTransport

        if port is None:
            port = 465 if ssl else 587 if starttls else 25
        return SMTPTransport(
            host,
            port,
            starttls=starttls,
            ssl=ssl,
            username=username,
            password=password,
            timeout=timeout,
            connections=connections,
            rate=rate,
            ssl_context=ssl_context,
        )
    raise ValueError(f"unknown transport {kind!r}; choose 'outbox' or 'smtp'")


__all__ = [
    "MemoryTransport",
    "NotSent",
    "Outgoing",
    "SentMessage",
    "Transport",
    "TransportKind",
    "check_envelope",
    "make_transport",
]
