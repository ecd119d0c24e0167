"""Security pieces of the web service: response headers, CSRF tokens, rate limits, Basic auth.

- Headers: every response gets a Content-Security-Policy (no scripts anywhere; framing refused
  except for the preview's digest document, which only the preview page itself may frame),
  X-Frame-Options, nosniff, Referrer-Policy no-referrer (the URLs carry tokens) and friends. A
  response that sets its own value keeps it.
- CSRF: a signed double-submit token. The browser holds a random cookie (HttpOnly,
  SameSite=Lax); each form carries HMAC(key, cookie) in a hidden field; both must agree, compared
  in constant time. Without the key nobody can make a field for a cookie, so a cookie planted by a
  sibling domain does not help an attacker.
- Rate limit: an in-memory sliding window per key (client address, e-mail address).
- Basic auth for the editors' preview, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages: our own stylesheet, no scripts at all, forms only to ourselves, never framed.
CSP_PAGE = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The preview page frames the digest document from this origin.
CSP_PREVIEW_PAGE = CSP_PAGE + "; frame-src 'self'"
# Mail HTML (the preview's digest document, the published archive): inline styles and remote
# images as in a mail client; still no scripts, no forms, no plugins.
_CSP_MAIL_HTML = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "form-action 'none'; base-uri 'none'"
)
CSP_FRAMEABLE_DIGEST = _CSP_MAIL_HTML + "; frame-ancestors 'self'"
CSP_PUBLISHED = _CSP_MAIL_HTML + "; frame-ancestors 'none'"

DEFAULT_HEADERS: Mapping[str, str] = {
    "content-security-policy": CSP_PAGE,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000"


def apply_default_headers(headers: MutableHeaders, https: bool) -> None:
    """Add every default security header the response does not set itself."""
    for name, value in DEFAULT_HEADERS.items():
        headers.setdefault(name, value)
    if https:
        headers.setdefault("strict-transport-security", HSTS)


class SecurityHeaders:
    """ASGI middleware: `apply_default_headers` on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                apply_default_headers(MutableHeaders(scope=message), https)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- CSRF ---------------------------------------------------------------------------------------
CSRF_COOKIE = "newsletter_csrf"
CSRF_FIELD = "csrf_token"
_COOKIE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class Csrf:
    """Signed double-submit CSRF tokens (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        # A key of its own, derived from the token key, so a CSRF field is never a token MAC.
        self._key = hmac.new(key, b"newsletter-csrf-key", hashlib.sha256).digest()

    def field_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode("ascii"), hashlib.sha256).hexdigest()

    @staticmethod
    def cookie_of(request: Request) -> str | None:
        value = request.cookies.get(CSRF_COOKIE)
        return value if value is not None and _COOKIE_SHAPE.fullmatch(value) else None

    def issue(self, request: Request) -> tuple[str, str | None]:
        """(hidden field value, new cookie value or None when the browser already has one)."""
        cookie = self.cookie_of(request)
        if cookie is not None:
            return self.field_for(cookie), None
        cookie = secrets.token_urlsafe(32)
        return self.field_for(cookie), cookie

    def valid(self, request: Request, field: object) -> bool:
        cookie = self.cookie_of(request)
        if cookie is None or not isinstance(field, str) or not field.isascii():
            return False
        return hmac.compare_digest(self.field_for(cookie).encode("ascii"), field.encode("ascii"))

    @staticmethod
    def set_cookie(response: Response, cookie: str, https: bool) -> None:
        response.set_cookie(
            CSRF_COOKIE, cookie, path="/", httponly=True, samesite="lax", secure=https
        )


# --- rate limit ---------------------------------------------------------------------------------
class RateLimiter:
    """At most `limit` hits per key within `window` (a sliding window), in memory.

    Thread-safe. Keys whose hits have all expired are dropped, so memory stays bounded by the
    keys active within one window (and by `max_keys`: when full, the stalest keys go first).
    """

    def __init__(self, limit: int, window: timedelta, max_keys: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, now: datetime) -> timedelta | None:
        """Count one hit; None when allowed, else how long until the next one would be."""
        start = now - self.window
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_keys:
                    self._prune(start)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= start:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            return None

    def _prune(self, start: datetime) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= start]:
            del self._hits[key]
        while len(self._hits) >= self.max_keys:  # all active: drop the stalest
            stalest = min(self._hits, key=lambda k: self._hits[k][-1])
            del self._hits[stalest]


# --- Basic auth ---------------------------------------------------------------------------------
def basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    """Whether an Authorization header carries exactly user:password (constant-time compare)."""
    if not header or not password:
        return False
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, colon, given_password = decoded.partition(":")
    user_ok = hmac.compare_digest(given_user.encode("utf-8"), user.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password.encode("utf-8"), password.encode("utf-8"))
    return bool(colon) and user_ok and password_ok
