"""The URLs mails point at, in one place, so the web service (`web.py`) routes the same shapes.

Each personal link carries a signed token (`tokens.py`) bound to subscriber, audience and
purpose; the web service verifies it.
"""

from __future__ import annotations

from urllib.parse import quote

UNSUBSCRIBE = "/unsubscribe/{token}"  # GET: confirm page; POST: RFC 8058 one-click
VIEW = "/view/{issue_id}/{token}"
PREFERENCES = "/preferences/{token}"
CONFIRM = "/confirm/{token}"


def unsubscribe_url(base: str, token: str) -> str:
    return base + UNSUBSCRIBE.format(token=token)


def view_url(base: str, issue_id: int, token: str) -> str:
    return base + VIEW.format(issue_id=issue_id, token=token)


def preferences_url(base: str, token: str) -> str:
    return base + PREFERENCES.format(token=token)


def confirm_url(base: str, token: str) -> str:
    return base + CONFIRM.format(token=token)


def unsubscribe_mailto(address: str, token: str) -> str:
    """mailto: for List-Unsubscribe; the token in the subject identifies the subscriber."""
    return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"


def list_id(audience_id: str, site_host: str) -> str:
    """RFC 2919 List-Id value: one list per audience."""
    return f"{audience_id}.{site_host}"
