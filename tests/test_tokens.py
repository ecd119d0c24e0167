"""tokens.py: HMAC-SHA256 tokens bound to subscriber, audience and purpose (standards SEC-10,
UNSUB-07, SEC-08)."""

from __future__ import annotations

import base64
import pickle
import re
import struct
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.errors import ConfigError, NewsletterError
from newsletter.tokens import (
    PURPOSES,
    SECRET_KEY_ENV,
    TokenClaims,
    TokenError,
    TokenMaker,
    make_token,
    read_token,
    secret_key_from_env,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
AMS = ZoneInfo("Europe/Amsterdam")
ISSUED = datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=AMS)
LATER = ISSUED + timedelta(days=30)
FIELDS = struct.Struct(">BBQII")  # the documented layout, read independently of the module


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(
    purpose: str = "unsubscribe",
    ttl: timedelta | None = None,
    *,
    subscriber_id: int = 42,
    audience_id: str = "beslissers",
) -> str:
    return make_token(KEY, subscriber_id, audience_id, purpose, ISSUED, ttl)


def reason(excinfo: pytest.ExceptionInfo[TokenError]) -> str:
    return excinfo.value.reason


# --- round trip and shape ----------------------------------------------------------------------
@pytest.mark.parametrize("purpose", PURPOSES)
def test_round_trip_returns_the_claims(purpose: str) -> None:
    claims = read_token(KEY, token(purpose, timedelta(days=90)), purpose, LATER)
    assert claims == TokenClaims(
        subscriber_id=42,
        audience_id="beslissers",
        purpose=purpose,
        issued_at=ISSUED.replace(microsecond=0).astimezone(UTC),  # kept to the second
        expires_at=ISSUED.replace(microsecond=0).astimezone(UTC) + timedelta(days=90),
    )



def test_a_token_maker_signs_each_subscriber_on_its_own() -> None:
    # One maker signs a whole send: no state may carry over from one token to the next.
    maker = TokenMaker(KEY, "beslissers", "preferences", ISSUED, timedelta(days=90))
    made = [maker(number) for number in (1, 2, 1, 2**63 - 1)]
    assert made[0] == made[2] != made[1]
    for number, text in zip((1, 2, 1, 2**63 - 1), made, strict=True):
        assert text == token("preferences", timedelta(days=90), subscriber_id=number)
        assert read_token(KEY, text, "preferences", LATER).subscriber_id == number
    with pytest.raises(ValueError, match="subscriber_id"):
        maker(-1)

def test_token_is_compact_url_safe_text_without_padding() -> None:
    text = token(ttl=timedelta(days=180))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert len(text) < 100  # fits comfortably in a List-Unsubscribe URL
    assert make_token(KEY, 42, "beslissers", "unsubscribe", ISSUED) == token()  # deterministic


def test_tokens_differ_per_subscriber_audience_and_purpose() -> None:
    tokens = {
        token(),
        token(subscriber_id=43),
        token(audience_id="bouwers"),
        token("view"),
        token(ttl=timedelta(days=1)),
    }
    assert len(tokens) == 5


def test_non_ascii_audience_round_trips() -> None:
    text = make_token(KEY, 0, "lezers-één", "view", ISSUED)
    assert read_token(KEY, text, "view", LATER).audience_id == "lezers-één"


# --- tampering (SEC-10, UNSUB-07: hard to forge, verified server-side) --------------------------
FIELD_OFFSETS = {
    "version": 0,
    "purpose": 1,
    "subscriber_id": 2 + 7,  # lowest byte of the id
    "issued_at": 10 + 3,
    "expires_at": 14 + 3,
    "audience_id": FIELDS.size,
    "mac_first_byte": -32,
    "mac_last_byte": -1,
}


@pytest.mark.parametrize("field", FIELD_OFFSETS)
def test_sec10_tampering_with_any_field_breaks_the_signature(field: str) -> None:
    raw = bytearray(unb64(token(ttl=timedelta(days=1))))
    raw[FIELD_OFFSETS[field]] ^= 0x01
    with pytest.raises(TokenError) as excinfo:
        read_token(KEY, b64(bytes(raw)), "unsubscribe", ISSUED)
    assert reason(excinfo) == "signature"


def test_sec10_changing_the_subscriber_keeping_the_mac_is_refused() -> None:
    raw = unb64(token())
    version, purpose, _, issued, expires = FIELDS.unpack_from(raw)
    forged = FIELDS.pack(version, purpose, 43, issued, expires) + raw[FIELDS.size :]
    with pytest.raises(TokenError) as excinfo:
        read_token(KEY, b64(forged), "unsubscribe", ISSUED)
    assert reason(excinfo) == "signature"


def test_sec10_removing_the_expiry_is_refused() -> None:
    raw = unb64(token(ttl=timedelta(days=1)))
    version, purpose, sid, issued, _ = FIELDS.unpack_from(raw)
    forged = FIELDS.pack(version, purpose, sid, issued, 0) + raw[FIELDS.size :]
    with pytest.raises(TokenError) as excinfo:
        read_token(KEY, b64(forged), "unsubscribe", LATER)
    assert reason(excinfo) == "signature"


def test_sec10_token_signed_with_another_key_is_refused() -> None:
    forged = make_token(OTHER_KEY, 42, "beslissers", "unsubscribe", ISSUED)
    with pytest.raises(TokenError) as excinfo:
        read_token(KEY, forged, "unsubscribe", ISSUED)
    assert reason(excinfo) == "signature"


def test_sec10_key_rotation_accepts_the_old_key_in_a_list() -> None:
    old = make_token(OTHER_KEY, 42, "beslissers", "view", ISSUED)
    assert read_token([KEY, OTHER_KEY], old, "view", LATER).subscriber_id == 42
    with pytest.raises(TokenError):
        read_token([KEY], old, "view", LATER)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "a" * 2000,
        "AAAA====",
        "has space",
        "plus+slash/",
        "ünïcode",
        "A" * 45,  # decodes, but too short to hold fields + MAC
    ],
)
def test_malformed_tokens_are_format_errors(bad: str) -> None:
    with pytest.raises(TokenError) as excinfo:
        read_token(KEY, bad, "unsubscribe", ISSUED)
    assert reason(excinfo) == "format"


def test_truncated_or_extended_tokens_are_refused() -> None:
    good = token()
    for bad in (good[:-1], good[:-4], good + "A", good + "AAAA", "A" + good):
        with pytest.raises(TokenError):
            read_token(KEY, bad, "unsubscribe", ISSUED)


def test_non_canonical_base64_is_refused() -> None:
    good = token(audience_id="bouwer")  # 56 bytes: the last character carries unused bits
    assert len(good) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variants = [good[:-1] + c for c in alphabet if c != good[-1]]
    same_bytes = [v for v in variants if unb64(v) == unb64(good)]
    assert same_bytes  # such strings exist...
    for variant in same_bytes:  # ...and none of them is accepted
        with pytest.raises(TokenError) as excinfo:
            read_token(KEY, variant, "unsubscribe", ISSUED)
        assert reason(excinfo) == "format"


# --- purpose confusion (SEC-10: unsubscribe != confirm) ------------------------------------------
@pytest.mark.parametrize("made_for", PURPOSES)
@pytest.mark.parametrize("used_for", PURPOSES)
def test_sec10_token_is_only_valid_for_its_purpose(made_for: str, used_for: str) -> None:
    text = token(made_for)
    if made_for == used_for:
        assert read_token(KEY, text, used_for, ISSUED).purpose == made_for
    else:
        with pytest.raises(TokenError) as excinfo:
            read_token(KEY, text, used_for, ISSUED)
        assert reason(excinfo) == "purpose"


def test_unknown_purpose_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="purpose"):
        make_token(KEY, 1, "a", "delete", ISSUED)
    with pytest.raises(ValueError, match="purpose"):
        read_token(KEY, token(), "delete", ISSUED)


# --- expiry --------------------------------------------------------------------------------------
def test_expiry_is_exclusive_at_the_second() -> None:
    text = token(ttl=timedelta(hours=1))
    start = ISSUED.replace(microsecond=0)
    assert read_token(KEY, text, "unsubscribe", start + timedelta(minutes=59, seconds=59))
    with pytest.raises(TokenError) as excinfo:
        read_token(KEY, text, "unsubscribe", start + timedelta(hours=1))
    assert reason(excinfo) == "expired"


def test_without_ttl_a_token_never_expires() -> None:
    far = datetime(2099, 1, 1, tzinfo=UTC)
    claims = read_token(KEY, token(), "unsubscribe", far)
    assert claims.expires_at is None


def test_bad_arguments_raise_value_error() -> None:
    naive = datetime(2026, 11, 30, 8, 0)
    with pytest.raises(ValueError, match="timezone"):
        make_token(KEY, 1, "a", "view", naive)
    with pytest.raises(ValueError, match="timezone"):
        read_token(KEY, token(), "unsubscribe", naive)
    with pytest.raises(ValueError, match="32 bytes"):
        make_token(b"short", 1, "a", "view", ISSUED)
    with pytest.raises(ValueError, match="32 bytes"):
        read_token(b"short", token(), "unsubscribe", ISSUED)
    with pytest.raises(ValueError, match="subscriber_id"):
        make_token(KEY, -1, "a", "view", ISSUED)
    with pytest.raises(ValueError, match="subscriber_id"):
        make_token(KEY, True, "a", "view", ISSUED)
    with pytest.raises(ValueError, match="audience_id"):
        make_token(KEY, 1, "", "view", ISSUED)
    with pytest.raises(ValueError, match="ttl"):
        make_token(KEY, 1, "a", "view", ISSUED, timedelta(0))


def test_token_error_is_a_newsletter_error_and_pickles() -> None:
    with pytest.raises(NewsletterError):
        read_token(KEY, "x", "view", ISSUED)
    error = TokenError("expired", "expired at noon")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.message, str(copy)) == (error.reason, error.message, str(error))


# --- the key from the environment (SEC-08) -------------------------------------------------------
def test_sec08_secret_key_comes_from_the_environment() -> None:
    value = "x" * 40
    assert secret_key_from_env({SECRET_KEY_ENV: value}) == value.encode()


@pytest.mark.parametrize("environ", [{}, {SECRET_KEY_ENV: ""}])
def test_sec08_missing_key_names_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=SECRET_KEY_ENV) as excinfo:
        secret_key_from_env(environ)
    assert "not set" in str(excinfo.value)


def test_sec08_short_key_names_the_variable_and_never_shows_the_value() -> None:
    secret = "hunter2-short-secret"
    with pytest.raises(ConfigError, match=SECRET_KEY_ENV) as excinfo:
        secret_key_from_env({SECRET_KEY_ENV: secret})
    assert "too short" in str(excinfo.value)
    assert secret not in str(excinfo.value)
    assert secret not in repr(excinfo.value.__dict__)


def test_sec08_key_length_counts_bytes() -> None:
    # 16 characters of two bytes each: 32 bytes of key material.
    assert len(secret_key_from_env({SECRET_KEY_ENV: "é" * 16})) == 32


# --- properties ----------------------------------------------------------------------------------
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(
    subscriber_id=st.integers(min_value=0, max_value=2**63 - 1),
    audience_id=st.text(min_size=1, max_size=50),
    purpose=st.sampled_from(PURPOSES),
    issued_at=moments,
    ttl=st.none() | st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=365)),
)
def test_property_round_trip(
    subscriber_id: int,
    audience_id: str,
    purpose: str,
    issued_at: datetime,
    ttl: timedelta | None,
) -> None:
    text = make_token(KEY, subscriber_id, audience_id, purpose, issued_at, ttl)
    claims = read_token(KEY, text, purpose, issued_at)
    assert (claims.subscriber_id, claims.audience_id, claims.purpose) == (
        subscriber_id,
        audience_id,
        purpose,
    )
    assert claims.issued_at == issued_at.replace(microsecond=0)
    if ttl is None:
        assert claims.expires_at is None
    else:
        assert claims.expires_at is not None
        assert claims.expires_at - claims.issued_at >= ttl


@given(st.text(max_size=120))
def test_property_arbitrary_text_only_ever_raises_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        read_token(KEY, text, "unsubscribe", ISSUED)
