"""The double opt-in mail: a small text + HTML message in the site language.

Built with the standard `email` package (`EmailMessage`, policy SMTP: CRLF line ends; both parts
quoted-printable, so 7-bit clean with short lines, standards MAIL-04/MAIL-07), with Date, From,
To and a Message-ID (MAIL-01/02). Header values that contain line breaks are refused by the
policy (MAIL-08). It carries a real, signed confirm token (SEC-10), and, for an address that is
already subscribed, a preferences link instead of pretending nothing happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr

from babel.dates import format_datetime as babel_datetime
from jinja2 import Environment

from ..config import AudienceConfig, Config


@dataclass(frozen=True)
class ConfirmationMail:
    """What one confirmation mail says."""

    email: str
    name: str
    asked: Sequence[AudienceConfig]  # to be confirmed (empty: nothing new to confirm)
    already: Sequence[AudienceConfig]  # active memberships
    confirm_url: str | None
    preferences_url: str | None
    expires: datetime


def envelope_sender(config: Config) -> str:
    return parseaddr(config.email.sender)[1]


def build_confirmation(
    config: Config,
    env: Environment,
    strings: Mapping[str, str],
    language: str,
    mail: ConfirmationMail,
    now: datetime,
) -> tuple[bytes, str]:
    """(message bytes, Message-ID) of the confirmation mail.

    Raises:
        ValueError: an address or name that cannot go into a header.
    """
    site = config.site.title
    until = babel_datetime(
        mail.expires, "d MMMM y HH:mm", tzinfo=config.site.tz, locale=language
    )
    context = {
        "t": strings,
        "lang": config.site.language,
        "site_title": site,
        "site_url": config.site.url,
        "sender_line": config.email.sender_line,
        "mail": mail,
        "until": until,
    }
    text = env.get_template("confirm_mail.txt").render(context)
    html = env.get_template("confirm_mail.html").render(context)

    domain = envelope_sender(config).rpartition("@")[2] or "localhost"
    message_id = make_msgid(domain=domain)
    message = EmailMessage(policy=SMTP)
    key = "mail_subject" if mail.confirm_url else "mail_subject_known"
    message["Subject"] = strings[key].format(site=site)
    message["From"] = config.email.sender
    local, _, host = mail.email.rpartition("@")
    message["To"] = Address(display_name=mail.name, username=local, domain=host)
    if config.email.reply_to:
        message["Reply-To"] = config.email.reply_to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this, please
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message.as_bytes(), message_id
