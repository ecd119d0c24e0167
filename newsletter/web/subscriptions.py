"""What subscribing, confirming and changing preferences do to the store (and the mail they send).

Plain synchronous code, no HTTP: the web endpoints call it (in a worker thread, or after the
response as a background task).

The double opt-in rules:

- A new address is stored "pending" with the chosen audiences as its memberships (so they
  survive until the confirmation; `Store.confirm` makes them count).
- An address already in the store is not written to by a subscribe at all: what it asks for
  travels in the signed confirm token and is applied only when the confirm link is used. So
  nobody can add audiences to (or rename) someone else's subscription.
- A pending address gets a fresh confirm link listing everything that confirming activates; an
  active address gets a confirm link for the audiences it does not have yet and a link to its
  settings; an address that unsubscribed, bounced, complained or is suppressed gets nothing.
- Text typed into the form (the name) never appears in a mail to an unconfirmed address, so the
  form cannot be used to send someone a message of the sender's choosing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta

from jinja2 import Environment

from .. import links
from ..config import AudienceConfig, Config
from ..delivery import Transport
from ..model import Subscriber
from ..store import Store
from ..tokens import ALL_AUDIENCES, make_token
from .mail import ConfirmationMail, build_confirmation, envelope_sender
from .security import RateLimiter

log = logging.getLogger(__name__)

MAIL_WINDOW = timedelta(hours=1)  # at most web.subscribe_limit confirmation mails per address
PREFERENCES_TTL = timedelta(days=30)


class Subscriptions:
    def __init__(
        self,
        config: Config,
        store: Store,
        transport: Transport,
        key: bytes,
        env: Environment,
        strings: Mapping[str, str],
        language: str,
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.key = key
        self.env = env
        self.strings = strings
        self.language = language
        self.audiences: dict[str, AudienceConfig] = {a.id: a for a in config.audiences}
        self.mail_limit = RateLimiter(config.web.subscribe_limit, MAIL_WINDOW)
        self._send_lock = threading.Lock()  # one message at a time through the transport

    def preferences_token(self, subscriber_id: int, now: datetime) -> str:
        return make_token(self.key, subscriber_id, ALL_AUDIENCES, "preferences", now, ttl=PREFERENCES_TTL)

    def subscribe(self, email: str, name: str, audiences: tuple[str, ...], now: datetime) -> None:
        """Handle one valid subscribe request (see the module docstring). Never raises: it runs
        after the response, where an error can only be logged."""
        try:
            self._subscribe(email, name, audiences, now)
        except Exception:  # noqa: BLE001 - a background task must log, not crash the server
            log.exception("subscribe %s: failed", mask(email))

    def _subscribe(self, email: str, name: str, audiences: tuple[str, ...], now: datetime) -> None:
        store = self.store
        if store.is_suppressed(email):
            log.info("subscribe %s: suppressed, no mail", mask(email))
            return
        subscriber = store.get_subscriber(email)
        if subscriber is None:
            change = store.add_subscriber(email, name, audiences, now, status="pending")
            if change.subscriber_id is not None:
                subscriber = store.get_subscriber(change.subscriber_id)
        if subscriber is None or subscriber.status not in ("pending", "active", "unsubscribed"):
            log.info("subscribe %s: %s, no mail", mask(email), subscriber.status if subscriber else "skipped")
            return
        if self.mail_limit.hit(subscriber.email_key, now) is not None:
            log.warning("subscribe %s: too many confirmation mails this hour, none sent", mask(email))
            return
        memberships = store.memberships(subscriber.id)
        active = [a for a in self.audiences if memberships.get(a) == "active"]
        if subscriber.status == "pending":  # confirming activates what is pending: list it all
            asked = [a for a in self.audiences if a in active or (a in audiences and a not in memberships)]
            already: list[str] = []
        else:  # active, or unsubscribed and asking to come back: confirm what is not active yet
            asked = [a for a in self.audiences if a in audiences and memberships.get(a) != "active"]
            already = active
        if not asked and not already:
            log.info("subscribe %s: nothing to confirm", mask(email))
            return
        base = self.config.public_url
        ttl = timedelta(hours=self.config.web.confirm_hours)
        confirm = None
        if asked:
            token = make_token(self.key, subscriber.id, ",".join(asked), "confirm", now, ttl=ttl)
            confirm = links.confirm_url(base, token)
        manage = links.preferences_url(base, self.preferences_token(subscriber.id, now)) if already else None
        mail = ConfirmationMail(
            email=subscriber.email,
            name=subscriber.name if subscriber.status == "active" else "",
            asked=[self.audiences[a] for a in asked],
            already=[self.audiences[a] for a in already],
            confirm_url=confirm,
            preferences_url=manage,
            expires=now + ttl,
        )
        message, message_id = build_confirmation(self.config, self.env, self.strings, self.language, mail, now)
        with self._send_lock:
            self.transport.send(envelope_sender(self.config), subscriber.email, message, message_id)
        log.info("subscribe %s: mail sent (confirm: %s)", mask(email), ", ".join(asked) or "-")

    def confirm(self, subscriber: Subscriber, wanted: list[str], now: datetime) -> tuple[Subscriber, dict[str, str]]:
        """Activate a pending address and join the audiences its token names (also ones it left
        before: the signed link is a fresh opt-in); returns the subscriber and its memberships
        afterwards. Harmless when repeated."""
        self.store.confirm(subscriber.id, now)
        self.store.rejoin(subscriber.id, wanted, now)
        fresh = self.store.get_subscriber(subscriber.id) or subscriber
        return fresh, self.store.memberships(subscriber.id)

    def save_preferences(self, subscriber: Subscriber, wanted: set[str], now: datetime) -> list[str]:
        """Leave the unticked audiences and join the ticked ones (the preferences link is signed,
        so ticking an audience left before is a fresh opt-in); returns the audiences joined."""
        memberships = self.store.memberships(subscriber.id)
        for audience_id in self.audiences:
            if memberships.get(audience_id) == "active" and audience_id not in wanted:
                self.store.unsubscribe(subscriber.id, audience_id, now)
        join = [a for a in self.audiences if a in wanted and memberships.get(a) != "active"]
        return self.store.rejoin(subscriber.id, join, now) if join else []


def mask(email: str) -> str:
    """`anna@example.nl` -> `an…@example.nl`: enough to recognise, not to harvest."""
    local, _, domain = email.rpartition("@")
    return f"{local[:2]}…@{domain}" if len(local) > 2 else f"{local[:1]}…@{domain}"
