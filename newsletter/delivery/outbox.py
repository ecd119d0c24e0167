"""The default transport: every message becomes one `.eml` file in a folder.

Works on a fresh machine with no mail server (`newsletter send` writes the outbox; an operator or
another tool can pick the files up). The file name comes from the Message-ID, so sending the
same message twice (a retry, a resumed run) leaves one file, and is made of a safe character set
plus a hash of the full id, so no Message-ID can reach outside the folder or collide with another.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import DeliveryError
from ..output import write_atomic
from . import check_envelope

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")
_MAX_STEM = 100


def outbox_filename(message_id: str) -> str:
    """'<1.2.ab@example.nl>' -> '1.2.ab@example.nl.<hash>.eml': readable, unique, and never a
    path (no separators, no leading dot)."""
    if not message_id or any(ord(c) < 0x20 or c == "\x7f" for c in message_id):
        raise ValueError(f"Message-ID {message_id!r} is empty or has control characters")
    readable = _UNSAFE.sub("_", message_id.strip().strip("<>"))[:_MAX_STEM].lstrip(".") or "message"
    # Sanitising maps different ids to one name; the hash of the exact id keeps them apart.
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{readable}.{digest}.eml"


class OutboxTransport:
    """Writes each message atomically to `folder/<Message-ID>.<hash>.eml`."""

    parallelism = 1  # disk-bound: more threads would not help

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, message_id: str) -> Path:
        """Where the message with this Message-ID is (or will be) written."""
        return self.folder / outbox_filename(message_id)

    def send(self, sender: str, recipient: str, message: bytes, message_id: str) -> None:
        """Write the message; the same Message-ID again replaces the file (never a second one).

        The envelope is not stored: the file holds exactly the bytes SMTP would carry.

        Raises:
            DeliveryError: the file could not be written (transient: a retry may work).
        """
        check_envelope(sender, recipient)
        target = self.path_for(message_id)
        try:
            if target.read_bytes() == message:
                return  # already there: keep its mtime, like any unchanged output
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DeliveryError(
                recipient, f"cannot read {target}: {exc}", kind="transient"
            ) from exc
        try:
            write_atomic(target, message)
        except OSError as exc:
            raise DeliveryError(
                recipient, f"cannot write {target}: {exc.strerror or exc}", kind="transient"
            ) from exc

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["OutboxTransport", "outbox_filename"]
