"""Unsubscribe requests that arrive by mail: the `mailto:` of every newsletter's List-Unsubscribe.

Each message carries `List-Unsubscribe: <https://.../unsubscribe/TOKEN>,
<mailto:ADDRESS?subject=unsubscribe%20TOKEN>` (RFC 2369). A mail client that offers the mailto
sends ADDRESS a message whose subject is "unsubscribe TOKEN"; such a request must be honoured
like the one-click POST (CAN-SPAM and the bulk-sender rules of the big mailbox providers count
every advertised way out). Here the token is found in such a message and used as the web service
uses it: it is the authority (HMAC-signed, bound to subscriber, audience and purpose), so who
sent the request does not matter, and nothing is ever sent back (a reply to a forged sender
would be backscatter).

`handle` is the rule for one message; `maildir_new` / `mark_handled` are the Maildir edge the
command (`newsletter subscribers unsubscribe-mail`) reads from.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from .tokens import TokenError, read_token

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .store import Store

# "unsubscribe", whitespace, a base64url token; a client may put "Re:", "AW:" etc. before it.
_REQUEST = re.compile(r"(?<![\w-])unsubscribe\s+([A-Za-z0-9_-]{16,})(?![\w-])", re.IGNORECASE)
_BODY_CHARS = 8192  # where a token pasted into the body is looked for: its start only

Outcome = Literal["unsubscribed", "already", "no token", "refused", "unknown subscriber"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


@dataclass(frozen=True)
class Handled:
    """What one request did. `subscriber_id`/`audience_id` are set once the token was valid."""

    outcome: Outcome
    detail: str = ""
    subscriber_id: int | None = None
    audience_id: str = ""

    def describe(self) -> str:
        where = f"subscriber {self.subscriber_id} from {self.audience_id}"
        if self.outcome == "unsubscribed":
            return f"unsubscribed {where}"
        if self.outcome == "already":
            return f"already unsubscribed: {where}"
        if self.outcome == "unknown subscriber":
            return f"no such subscriber ({self.subscriber_id}): removed, nothing to do"
        return f"{self.outcome}: {self.detail}" if self.detail else self.outcome


def parse(raw: bytes) -> EmailMessage:
    """A message as received (RFC 5322 bytes); never raises for a malformed one (the policy
    records defects instead)."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # the default policy's message class
    return message


def find_token(message: EmailMessage) -> str | None:
    """The token of "unsubscribe TOKEN" in the subject, or else at the start of the plain-text
    body (where someone may have pasted it); None if there is none."""
    try:
        subject = str(message.get("subject", ""))
    except (ValueError, TypeError):  # a header the parser cannot decode: look at the body
        subject = ""
    found = _REQUEST.search(subject)
    if found is None:
        found = _REQUEST.search(_plain_text(message)[:_BODY_CHARS])
    return found.group(1) if found else None


def _plain_text(message: EmailMessage) -> str:
    try:
        part = message.get_body(preferencelist=("plain",))
        content = part.get_content() if part is not None else ""
    except (LookupError, ValueError, TypeError, AttributeError):  # a charset or structure we
        return ""  # cannot read: the subject was the place to look anyway
    return content if isinstance(content, str) else ""


def handle(store: Store, keys: bytes | Sequence[bytes], message: EmailMessage, now: datetime) -> Handled:
    """Do what the request asks: leave the token's audience, as the one-click POST does.
    Repeating a request changes nothing.

    Raises:
        StoreError: the store failed (the request should be kept and tried again).
    """
    from .store import NotFoundError

    token = find_token(message)
    if token is None:
        return Handled("no token", 'no "unsubscribe TOKEN" in the subject or the text')
    try:
        claims = read_token(keys, token, "unsubscribe", now)
    except TokenError as exc:
        return Handled("refused", f"token refused ({exc.reason}): {exc}")
    subscriber_id, audience_id = claims.subscriber_id, claims.audience_id
    try:
        changed = store.unsubscribe(subscriber_id, audience_id, now)
    except NotFoundError:  # the address was removed: it gets nothing anyway
        return Handled("unknown subscriber", "", subscriber_id, audience_id)
    return Handled("unsubscribed" if changed else "already", "", subscriber_id, audience_id)


# --- a Maildir ---------------------------------------------------------------------------------
def maildir_new(folder: Path) -> list[Path]:
    """The unread messages of a Maildir (`new/`), oldest name first.

    Raises:
        NotADirectoryError: folder is not a Maildir (no cur/, new/ and tmp/ in it).
    """
    if not all((folder / sub).is_dir() for sub in ("cur", "new", "tmp")):
        raise NotADirectoryError(f"{folder}: not a Maildir (it needs cur/, new/ and tmp/)")
    return sorted(
        entry for entry in (folder / "new").iterdir() if entry.is_file() and not entry.name.startswith(".")
    )


def mark_handled(path: Path) -> Path:
    """Move a message of `new/` to `cur/`, flagged seen (the Maildir way to say "read"), so
    the next run does not act on it again: an old request must not undo a later re-subscribe."""
    name = path.name.split(":", 1)[0]
    target = path.parent.parent / "cur" / f"{name}:2,S"
    os.replace(path, target)
    return target


__all__ = ["OUTCOMES", "Handled", "find_token", "handle", "maildir_new", "mark_handled", "parse"]
