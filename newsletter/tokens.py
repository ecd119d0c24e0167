"""Signed, compact tokens for the links in a newsletter (unsubscribe, view, confirm, preferences).

A token is one base64url string (no padding) of

    version (1 byte) | purpose (1) | subscriber id (8, big-endian) | issued at (4, Unix seconds)
    | expires at (4, Unix seconds, 0 = never) | audience id (UTF-8, the rest) | HMAC-SHA256 (32)

The MAC covers a fixed context string and every byte before it, so each field is bound to the
signature; the purpose is inside the signed bytes, so an unsubscribe token is never accepted as a
confirm token and vice versa (standards SEC-10, UNSUB-07). Verification uses
`hmac.compare_digest`, and `read_token` accepts several keys so a key can be rotated without
breaking the links already sent. Times are whole seconds: `TokenClaims.issued_at` is the
issued-at time truncated to the second.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from .errors import ConfigError, NewsletterError

PURPOSES: tuple[str, ...] = ("unsubscribe", "view", "confirm", "preferences")
SECRET_KEY_ENV = "NEWSLETTER_SECRET_KEY"
# The audience field of a "preferences" token: it covers every audience of the subscriber.
ALL_AUDIENCES = "*"
MIN_KEY_BYTES = 32  # 256 bits: the HMAC-SHA256 block output size; shorter keys are guessable

_VERSION = 1
_FIELDS = struct.Struct(">BBQII")
_MAC_SIZE = hashlib.sha256().digest_size
# Domain separation: a MAC made with the same key for another use never validates as a token.
_CONTEXT = b"newsletter-token\x00"
_MAX_AUDIENCE_BYTES = 200
# Longest valid token; anything longer is refused before decoding (cheap DoS guard).
_MAX_TOKEN_CHARS = math.ceil((_FIELDS.size + _MAX_AUDIENCE_BYTES + _MAC_SIZE) * 4 / 3)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_PURPOSE_CODES = {purpose: code for code, purpose in enumerate(PURPOSES, start=1)}
_MAX_UINT32 = 2**32 - 1

TokenProblem = Literal["format", "signature", "purpose", "expired"]


class TokenError(NewsletterError):
    """A token cannot be used: malformed, forged/tampered, for another purpose, or expired.

    `reason` lets a web page tell "this link has expired" apart from "this link is broken".
    """

    def __init__(self, reason: TokenProblem, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"invalid token ({reason}): {message}")

    def __reduce__(self) -> tuple[type[TokenError], tuple[TokenProblem, str]]:
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says."""

    subscriber_id: int
    audience_id: str
    purpose: str
    issued_at: datetime  # UTC, whole seconds
    expires_at: datetime | None  # UTC; None: never expires


def make_token(
    key: bytes,
    subscriber_id: int,
    audience_id: str,
    purpose: str,
    issued_at: datetime,
    ttl: timedelta | None = None,
) -> str:
    """A URL-safe token binding subscriber, audience and purpose, signed with key.

    Args:
        key: the secret, at least 32 bytes (see `secret_key_from_env`).
        subscriber_id: 0 or more.
        audience_id: non-empty, at most 200 bytes of UTF-8.
        purpose: one of `PURPOSES`.
        issued_at: aware datetime (kept to the second).
        ttl: lifetime after issued_at (rounded up to whole seconds); None: never expires.

    Raises:
        ValueError: a bad argument (these are programming errors, not bad user input).
    """
    return TokenMaker(key, audience_id, purpose, issued_at, ttl)(subscriber_id)


class TokenMaker:
    """`make_token` with everything but the subscriber fixed: a send makes one token per
    subscriber and purpose, so the arguments are checked and the key schedule is run once."""

    __slots__ = ("_code", "_issued", "_expires", "_audience", "_mac")

    def __init__(
        self,
        key: bytes,
        audience_id: str,
        purpose: str,
        issued_at: datetime,
        ttl: timedelta | None = None,
    ) -> None:
        """Raises ValueError for a bad argument, as `make_token` does."""
        _check_key(key)
        code = _PURPOSE_CODES.get(purpose)
        if code is None:
            raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
        audience = audience_id.encode("utf-8")
        if not audience or len(audience) > _MAX_AUDIENCE_BYTES:
            raise ValueError(f"audience_id must be 1..{_MAX_AUDIENCE_BYTES} bytes, got {audience_id!r}")
        issued = _seconds("issued_at", issued_at)
        expires = 0
        if ttl is not None:
            if ttl <= timedelta(0):
                raise ValueError(f"ttl must be positive, got {ttl!r}")
            expires = issued + math.ceil(ttl.total_seconds())
            if expires > _MAX_UINT32:
                raise ValueError(f"ttl {ttl!r} ends after 2106, out of range")
        self._code, self._issued, self._expires, self._audience = code, issued, expires, audience
        self._mac = hmac.new(key, _CONTEXT, hashlib.sha256)  # copied per token: same MAC as _mac

    def __call__(self, subscriber_id: int) -> str:
        if isinstance(subscriber_id, bool) or not isinstance(subscriber_id, int):
            raise ValueError(f"subscriber_id must be an int, got {subscriber_id!r}")
        if not 0 <= subscriber_id < 2**63:
            raise ValueError(f"subscriber_id out of range: {subscriber_id}")
        payload = (
            _FIELDS.pack(_VERSION, self._code, subscriber_id, self._issued, self._expires)
            + self._audience
        )
        mac = self._mac.copy()
        mac.update(payload)
        return _b64encode(payload + mac.digest())


def read_token(
    key: bytes | Sequence[bytes], token: str, purpose: str, now: datetime
) -> TokenClaims:
    """Verify token and return its claims.

    Args:
        key: the current secret, or several (current first) while a key is being rotated.
        token: the text from the URL.
        purpose: the purpose the caller serves; a token made for another purpose is refused.
        now: aware datetime; a token whose expiry is at or before now is refused.

    Raises:
        TokenError: bad format, bad signature, wrong purpose or expired (see `reason`).
        ValueError: a bad key, purpose or naive now (programming errors).
    """
    keys = [key] if isinstance(key, bytes | bytearray) else list(key)
    if not keys:
        raise ValueError("no key given")
    for one in keys:
        _check_key(one)
    if purpose not in _PURPOSE_CODES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    now_s = _seconds("now", now, allow_any=True)

    raw = _b64decode(token)
    if len(raw) < _FIELDS.size + 1 + _MAC_SIZE:
        raise TokenError("format", "too short")
    payload, tag = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
    # Every key is tried even after a match, so timing does not tell which key signed it.
    valid = False
    for one in keys:
        valid |= hmac.compare_digest(_mac(one, payload), tag)
    if not valid:
        raise TokenError("signature", "signature does not match")

    version, code, subscriber_id, issued, expires = _FIELDS.unpack_from(payload)
    if version != _VERSION or not 1 <= code <= len(PURPOSES) or subscriber_id >= 2**63:
        raise TokenError("format", f"unsupported token version {version}")
    try:
        audience_id = payload[_FIELDS.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError("format", "audience id is not UTF-8") from None
    found = PURPOSES[code - 1]
    if found != purpose:
        raise TokenError("purpose", f"token is for {found!r}, not {purpose!r}")
    if expires and now_s >= expires:
        raise TokenError("expired", f"expired at {_utc(expires).isoformat()}")
    return TokenClaims(
        subscriber_id=subscriber_id,
        audience_id=audience_id,
        purpose=found,
        issued_at=_utc(issued),
        expires_at=_utc(expires) if expires else None,
    )


def secret_key_from_env(environ: Mapping[str, str] = os.environ) -> bytes:
    """The token key from NEWSLETTER_SECRET_KEY (UTF-8 bytes of its value, used as is).

    Raises:
        ConfigError: the variable is missing or shorter than 32 bytes. The message names the
            variable and never shows its value.
    """
    value = environ.get(SECRET_KEY_ENV)
    hint = (
        f"set it to at least {MIN_KEY_BYTES} random characters, e.g. the output of "
        "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`"
    )
    if not value:
        raise ConfigError(SECRET_KEY_ENV, f"environment variable is not set; {hint}")
    key = value.encode("utf-8", errors="surrogateescape")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            SECRET_KEY_ENV,
            f"environment variable is too short ({len(key)} bytes, need {MIN_KEY_BYTES}); {hint}",
        )
    return key


# --- helpers -----------------------------------------------------------------------------------
def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise ValueError("key must be bytes")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + payload, hashlib.sha256).digest()


def _seconds(name: str, moment: datetime, *, allow_any: bool = False) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    seconds = math.floor(moment.timestamp())
    if not allow_any and not 0 <= seconds <= _MAX_UINT32:
        raise ValueError(f"{name} out of range: {moment.isoformat()}")
    return seconds


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(token: str) -> bytes:
    if not isinstance(token, str) or not token:
        raise TokenError("format", "empty")
    if len(token) > _MAX_TOKEN_CHARS:
        raise TokenError("format", "too long")
    # b64decode silently skips characters outside the alphabet; check them first.
    if not _BASE64URL.fullmatch(token) or len(token) % 4 == 1:
        raise TokenError("format", "not base64url text")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("format", "not base64url text") from None
    # Unused low bits in the last character would let several strings mean one token.
    if _b64encode(raw) != token:
        raise TokenError("format", "not canonical base64url")
    return raw


__all__ = [
    "MIN_KEY_BYTES",
    "PURPOSES",
    "SECRET_KEY_ENV",
    "TokenClaims",
    "TokenError",
    "TokenMaker",
    "make_token",
    "read_token",
    "secret_key_from_env",
]
