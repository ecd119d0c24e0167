"""delivery/: the outbox and SMTP transports (standards REL-03, REL-08, REL-10, REL-11, MAIL-10,
SEC-06, SEC-07, SEC-08, SEC-09).

SMTP is tested against a real aiosmtpd server on 127.0.0.1 (an OS-chosen port), with a handler
that stores what it receives and can refuse recipients, drop connections or slow down; TLS uses
a CA and server certificate generated here, so no network and no fixed files are needed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import pickle
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, LoginPassword

from newsletter.delivery import MemoryTransport, Outgoing, make_transport
from newsletter.delivery.outbox import OutboxTransport, outbox_filename
from newsletter.delivery.smtp import RateLimiter, SMTPTransport
from newsletter.digest import RenderedDigest
from newsletter.errors import DeliveryError
from newsletter.message import MessageTemplate, make_message_id

SENDER = "nieuwsbrief@ai-nieuws.example.nl"
USER, PASSWORD = "redactie", "geheim-wachtwoord-123"



# --- messages ------------------------------------------------------------------------------------
DIGEST = RenderedDigest(
    audience_id="beslissers",
    subject="Beslissers – week 48",
    preheader="",
    html="<p>Hallo %%NAME%%,</p>\n<p>"
    + "Nieuws. " * 60
    + '</p>\n<a href="%%UNSUBSCRIBE_URL%%">x</a>\n',
    text="Hallo %%NAME%%,\n.Een regel die met een punt begint.\n..\n.\nAfmelden: %%UNSUBSCRIBE_URL%%\n",
    article_ids=("a",),
    default_name="lezer",
)
TEMPLATE = MessageTemplate.build(
    DIGEST,
    sender=f"Redactie <{SENDER}>",
    reply_to=None,
    list_id="beslissers.ai-nieuws.example.nl",
    list_name="Voor beslissers",
)


def message(number: int, recipient: str = "") -> tuple[str, bytes, str]:
    """(recipient, message bytes, Message-ID) for subscriber `number`."""
    recipient = recipient or f"lezer{number}@example.nl"
    message_id = make_message_id(48, number, "ai-nieuws.example.nl")
    raw = TEMPLATE.compose(
        to_email=recipient,
        to_name=f"Lezer {number}",
        message_id=message_id,
        date=datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
        unsubscribe_url=f"https://ai-nieuws.example.nl/afmelden/{number}",
        unsubscribe_mailto="mailto:afmelden@ai-nieuws.example.nl",
        view_url=f"https://ai-nieuws.example.nl/bekijk/{number}",
    )
    return recipient, raw, message_id


def send(transport: Any, number: int, recipient: str = "") -> bytes:
    to, raw, message_id = message(number, recipient)
    transport.send(SENDER, to, raw, message_id)
    return raw


# --- a recording SMTP server ---------------------------------------------------------------------
@dataclass
class Received:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated: bool


@dataclass
class Recorder:
    """aiosmtpd handler: stores messages; behaviour switches for the failure tests."""

    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    refuse_data: dict[str, str] = field(default_factory=dict)  # recipient -> reply after DATA
    per_connection: int = 0  # after this many messages a connection is closed at the next MAIL
    close_with_421: bool = True  # else the connection is dropped without a reply
    drop_after_data: set[str] = field(default_factory=set)  # store, then drop before replying
    delay: float = 0.0  # seconds before replying to DATA (without blocking other sessions)
    mail_reply: str = ""  # if set, the reply to every MAIL command
    pipelining: bool = False  # advertise RFC 2920 PIPELINING (aiosmtpd handles it, silently)
    received: list[Received] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)
    mail_commands: int = 0
    quits: int = 0
    _counts: dict[Any, int] = field(default_factory=dict)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.peers.add(session.peer)
        return [responses[0], "250-PIPELINING", *responses[1:]] if self.pipelining else responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.mail_reply:
            if self.mail_reply.startswith("421"):
                asyncio.get_running_loop().call_soon(server.transport.close)
            return self.mail_reply
        if self.per_connection and self._counts.get(session.peer, 0) >= self.per_connection:
            if self.close_with_421:
                asyncio.get_running_loop().call_soon(server.transport.close)
                return "421 4.7.0 Too many messages on this connection, closing"
            server.transport.close()
            return "250 OK"  # never reaches the client
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self._counts[session.peer] = self._counts.get(session.peer, 0) + 1
        (recipient,) = envelope.rcpt_tos
        if recipient in self.refuse_data:
            return self.refuse_data[recipient]
        self.received.append(
            Received(
                peer=session.peer,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if recipient in self.drop_after_data:
            server.transport.close()
        return "250 2.0.0 OK: queued"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"

    def recipients(self) -> list[str]:
        return [r.rcpt_tos[0] for r in self.received]


class LocalController(Controller):
    """A Controller on an OS-chosen port (aiosmtpd 1.4 cannot report the port of port=0)."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class RefusingTLSServer(SMTPServer):
    """Advertises STARTTLS but refuses it, like a misconfigured relay."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


class RefusingTLSController(LocalController):
    def factory(self) -> Any:
        return RefusingTLSServer(self.handler, **self.SMTP_kwargs)


Start = Callable[..., tuple[Controller, Recorder]]


@pytest.fixture(params=[False, True], ids=["serial", "pipelining"])
def start_server(request: pytest.FixtureRequest) -> Iterator[Start]:
    """Every server test runs twice: commands one by one, and with the envelope pipelined."""
    controllers: list[Controller] = []

    def start(
        handler: Recorder | None = None,
        controller: type[Controller] = LocalController,
        **options: Any,
    ) -> tuple[Controller, Recorder]:
        handler = handler or Recorder()
        handler.pipelining = request.param
        server = controller(handler, hostname="127.0.0.1", port=0, **options)
        server.start()
        controllers.append(server)
        return server, handler

    yield start
    for server in controllers:
        server.stop()


def client(port: int, *, starttls: bool = False, ssl: bool = False, **options: Any) -> SMTPTransport:
    """A transport to 127.0.0.1:port as these tests use it (5 s timeout unless given)."""
    options.setdefault("timeout", 5.0)
    return SMTPTransport(
        "127.0.0.1", port, starttls=starttls, ssl=ssl, local_hostname="client.test", **options
    )


def plain(server: Controller, **options: Any) -> SMTPTransport:
    return client(server.port, **options)


def over_tls(server: Controller, *, ssl: bool = False, **options: Any) -> SMTPTransport:
    """STARTTLS (or implicit TLS with ssl=True) to the test server; the system CAs unless the
    caller passes an ssl_context."""
    return client(server.port, starttls=not ssl, ssl=ssl, **options)


# --- certificates --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA and a certificate for 127.0.0.1/localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)  # a certificate is checked against the real clock
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter test CA")])
    usage = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


# --- connection reuse (REL-11) -------------------------------------------------------------------
def test_rel11_many_messages_over_one_connection(start_server: Start) -> None:
    server, handler = start_server()
    with plain(server) as transport:
        sent = [send(transport, n) for n in range(25)]
        assert transport.connections_opened == 1
    assert len(handler.peers) == 1
    assert [r.data for r in handler.received] == sent  # byte for byte, dot-stuffing undone
    assert handler.recipients() == [f"lezer{n}@example.nl" for n in range(25)]
    assert {r.mail_from for r in handler.received} == {SENDER}
    assert handler.quits == 1  # close() says goodbye


def test_messages_with_leading_dots_and_bare_line_feeds_arrive_intact(start_server: Start) -> None:
    server, handler = start_server()
    with plain(server) as transport:
        transport.send(SENDER, "a@example.nl", b"Subject: x\r\n\r\n.\r\n..two\r\nlast", "<1@x>")
        transport.send(SENDER, "b@example.nl", b"Subject: y\n\nbare\nline feeds\n.\n", "<2@x>")
    assert handler.received[0].data == b"Subject: x\r\n\r\n.\r\n..two\r\nlast\r\n"
    # A bare LF is sent as CRLF: a lone "\n.\n" can never end the DATA early (SMTP smuggling).
    assert handler.received[1].data == b"Subject: y\r\n\r\nbare\r\nline feeds\r\n.\r\n"


# --- refusals (MAIL-10, REL-08) --------------------------------------------------------------------
def test_mail10_refused_recipient_among_good_ones(start_server: Start) -> None:
    handler = Recorder(
        refuse={
            "weg@example.nl": "550 5.1.1 <weg@example.nl>: mailbox unavailable",
            "vol@example.nl": "451 4.2.1 mailbox busy, try later",
        }
    )
    server, _ = start_server(handler)
    errors: dict[str, DeliveryError] = {}
    with plain(server) as transport:
        for number, recipient in enumerate(
            ["a@example.nl", "weg@example.nl", "b@example.nl", "vol@example.nl", "c@example.nl"]
        ):
            try:
                send(transport, number, recipient)
            except DeliveryError as error:
                errors[recipient] = error
        assert transport.connections_opened == 1  # a refusal does not cost the session
    assert handler.recipients() == ["a@example.nl", "b@example.nl", "c@example.nl"]
    permanent, transient = errors["weg@example.nl"], errors["vol@example.nl"]
    assert (permanent.kind, permanent.code, permanent.recipient) == (
        "permanent",
        550,
        "weg@example.nl",
    )
    assert "5.1.1" in permanent.message
    assert (transient.kind, transient.code) == ("transient", 451)


def test_rel08_refusal_after_data_is_classified_by_code(start_server: Start) -> None:
    handler = Recorder(
        refuse_data={
            "spam@example.nl": "554 5.7.1 Message rejected as spam",
            "later@example.nl": "452 4.3.1 Insufficient system storage",
        }
    )
    server, _ = start_server(handler)
    with plain(server) as transport:
        with pytest.raises(DeliveryError) as permanent:
            send(transport, 1, "spam@example.nl")
        with pytest.raises(DeliveryError) as transient:
            send(transport, 2, "later@example.nl")
        send(transport, 3)
        assert transport.connections_opened == 1
    assert (permanent.value.kind, permanent.value.code) == ("permanent", 554)
    assert (transient.value.kind, transient.value.code) == ("transient", 452)
    assert handler.recipients() == ["lezer3@example.nl"]


# --- lost connections (REL-10, REL-03) ---------------------------------------------------------------
@pytest.mark.parametrize("close_with_421", [True, False], ids=["421", "dropped"])
def test_rel10_reconnects_when_the_server_closes_mid_batch(
    start_server: Start, close_with_421: bool
) -> None:
    handler = Recorder(per_connection=3, close_with_421=close_with_421)
    server, _ = start_server(handler)
    with plain(server) as transport:
        for number in range(10):
            send(transport, number)  # no error: each lost session is replaced
        assert transport.connections_opened == 4
    assert handler.recipients() == [f"lezer{n}@example.nl" for n in range(10)]  # once each
    assert len(handler.peers) == 4


def test_rel10_a_server_that_keeps_closing_is_retried_once_then_transient(
    start_server: Start,
) -> None:
    server, handler = start_server(Recorder(mail_reply="421 4.3.2 System shutting down"))
    with plain(server) as transport, pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    assert (excinfo.value.kind, excinfo.value.code) == ("transient", 421)
    assert handler.mail_commands == 2 and len(handler.peers) == 2


def test_refused_sender_is_transient_not_the_recipients_fault(start_server: Start) -> None:
    # A refused MAIL FROM would refuse every recipient: it must not mark them undeliverable.
    server, handler = start_server(Recorder(mail_reply="553 5.7.1 Sender address rejected"))
    with plain(server) as transport:
        with pytest.raises(DeliveryError) as excinfo:
            send(transport, 1)
        assert (excinfo.value.kind, excinfo.value.code) == ("transient", 553)
        with pytest.raises(DeliveryError):
            send(transport, 2)
        assert transport.connections_opened == 1  # the session survives (RSET)


def test_rel03_connection_lost_after_data_is_unknown_not_retried(start_server: Start) -> None:
    handler = Recorder(drop_after_data={"lezer1@example.nl"})
    server, _ = start_server(handler)
    with plain(server) as transport:
        send(transport, 0)
        with pytest.raises(DeliveryError) as excinfo:
            send(transport, 1)
        send(transport, 2)  # on a new session
        assert transport.connections_opened == 2
    assert excinfo.value.kind == "unknown"
    assert "may have been delivered" in excinfo.value.message
    # The server did get it: retrying automatically would have sent it twice.
    assert handler.recipients() == ["lezer0@example.nl", "lezer1@example.nl", "lezer2@example.nl"]


def test_unreachable_server_is_a_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    transport = client(port, timeout=2.0)
    with pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    assert excinfo.value.kind == "transient"
    assert f"127.0.0.1:{port}" in excinfo.value.message


# --- TLS (SEC-06, SEC-07) ---------------------------------------------------------------------------
def test_sec06_starttls_with_a_trusted_certificate(
    start_server: Start, certificates: Certificates
) -> None:
    server, handler = start_server(tls_context=certificates.server_context(), require_starttls=True)
    transport = over_tls(server, ssl_context=certificates.client_context())
    with transport:
        for number in range(3):
            send(transport, number)
        assert transport.connections_opened == 1
    assert [r.tls for r in handler.received] == [True, True, True]


def test_sec06_starttls_with_an_untrusted_certificate_is_refused(
    start_server: Start, certificates: Certificates
) -> None:
    server, handler = start_server(tls_context=certificates.server_context())
    # The default context: the system CAs, which do not know the test CA.
    transport = over_tls(server)
    with pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    assert "CERTIFICATE_VERIFY_FAILED" in excinfo.value.message
    assert excinfo.value.kind == "transient"
    assert handler.received == [] and handler.mail_commands == 0  # no fall back to clear text


def test_sec06_an_unverified_context_is_refused() -> None:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="CERT_NONE"):
        SMTPTransport("127.0.0.1", 587, starttls=True, ssl=False, ssl_context=unverified)


def test_sec07_server_without_starttls_is_an_error_never_plain_text(start_server: Start) -> None:
    server, handler = start_server()  # no tls_context: STARTTLS is not offered
    transport = over_tls(server)
    with pytest.raises(DeliveryError, match="does not offer STARTTLS") as excinfo:
        send(transport, 1)
    assert excinfo.value.kind == "transient"
    assert handler.received == [] and handler.mail_commands == 0


def test_sec07_server_refusing_starttls_is_an_error(
    start_server: Start, certificates: Certificates
) -> None:
    server, handler = start_server(
        controller=RefusingTLSController, tls_context=certificates.server_context()
    )
    transport = over_tls(server, ssl_context=certificates.client_context())
    with pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    assert excinfo.value.code == 454
    assert handler.received == [] and handler.mail_commands == 0


def test_sec06_implicit_tls(start_server: Start, certificates: Certificates) -> None:
    server, handler = start_server(ssl_context=certificates.server_context())
    good = over_tls(server, ssl=True, ssl_context=certificates.client_context())
    with good:
        send(good, 1)
    assert [r.tls for r in handler.received] == [True]
    untrusted = over_tls(server, ssl=True)
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        send(untrusted, 2)
    assert len(handler.received) == 1


# --- AUTH (SEC-08, SEC-09) ------------------------------------------------------------------------
def test_auth_over_starttls(start_server: Start, certificates: Certificates) -> None:
    server, handler = start_server(
        tls_context=certificates.server_context(),
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    transport = over_tls(server, username=USER, password=PASSWORD, ssl_context=certificates.client_context())
    with transport:
        send(transport, 1)
        send(transport, 2)
    assert [(r.tls, r.authenticated) for r in handler.received] == [(True, True), (True, True)]


def test_sec09_wrong_password_is_an_error_that_never_shows_the_password(
    start_server: Start, certificates: Certificates
) -> None:
    server, handler = start_server(
        tls_context=certificates.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    wrong = "not-the-password-456"
    transport = over_tls(server, username=USER, password=wrong, ssl_context=certificates.client_context())
    with pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    assert excinfo.value.code == 535
    assert excinfo.value.kind == "transient"  # not the recipient's fault
    assert wrong not in str(excinfo.value) and wrong not in repr(transport)
    assert "password='***'" in repr(transport)
    assert handler.received == []


def test_sec08_credentials_are_never_sent_without_tls() -> None:
    with pytest.raises(ValueError, match="without TLS"):
        SMTPTransport("127.0.0.1", 25, starttls=False, ssl=False, username=USER, password=PASSWORD)
    with pytest.raises(ValueError, match="both"):
        SMTPTransport("127.0.0.1", 587, starttls=True, ssl=False, username=USER)
    with pytest.raises(ValueError, match="not both"):
        SMTPTransport("127.0.0.1", 587, starttls=True, ssl=True)


# --- rate limit and parallel connections (REL-11) ----------------------------------------------------
def test_rel11_rate_limit_spaces_the_messages(start_server: Start) -> None:
    server, handler = start_server()
    with plain(server, rate=50) as transport:
        start = time.monotonic()
        for number in range(30):
            send(transport, number)
        elapsed = time.monotonic() - start
    assert len(handler.received) == 30
    assert elapsed >= 0.5  # 29 gaps of 1/50 s; no upper bound (slow machines)


def test_rate_limiter_is_a_token_bucket() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(10, burst=2, clock=lambda: now[0], sleep=sleep)
    waits = [limiter.acquire() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.1])  # the burst, then 1/rate apart
    now[0] += 5.0  # idle: the bucket refills, but only up to the burst
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])
    assert RateLimiter(0).acquire() == 0.0
    with pytest.raises(ValueError):
        RateLimiter(-1)


def test_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(200)
    start = time.monotonic()
    threads = [
        threading.Thread(target=lambda: [limiter.acquire() for _ in range(10)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - start >= 39 / 200 * 0.95  # 40 tokens, the first one free


def test_rel11_parallel_connections_are_used_and_capped(start_server: Start) -> None:
    handler = Recorder(delay=0.05)  # slow replies: a free session is rarely available
    server, _ = start_server(handler)
    transport = plain(server, connections=2)
    assert transport.parallelism == 2
    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            for number in range(first, first + 5):
                send(transport, number)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n * 5,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transport.close()
    assert errors == []
    assert sorted(handler.recipients()) == sorted(f"lezer{n}@example.nl" for n in range(20))
    assert len(handler.peers) == 2  # both used, never more than `connections`
    assert transport.connections_opened == 2
    assert len({r.peer for r in handler.received}) == 2


def test_closed_transport_refuses_to_send(start_server: Start) -> None:
    server, handler = start_server()
    transport = plain(server)
    send(transport, 1)
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        send(transport, 2)
    assert handler.quits == 1


# --- envelope safety -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["a@b.nl\r\nRCPT TO:<x@evil.example>", "a b@c.nl", "<a@b.nl>", "geen-adres", ""]
)
def test_envelope_addresses_cannot_inject_commands(
    start_server: Start, tmp_path: Path, bad: str
) -> None:
    server, handler = start_server()
    _, raw, message_id = message(1)
    for transport in (plain(server), OutboxTransport(tmp_path), MemoryTransport()):
        with pytest.raises(ValueError, match="envelope"):
            transport.send(SENDER, bad, raw, message_id)
        with pytest.raises(ValueError, match="envelope"):
            transport.send(bad, "a@example.nl", raw, message_id)
    assert handler.mail_commands == 0 and list(tmp_path.iterdir()) == []


# --- outbox ------------------------------------------------------------------------------------------
def test_outbox_writes_one_eml_per_message(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    sent = {message_id: raw for _, raw, message_id in (message(n) for n in range(3))}
    for number in range(3):
        send(outbox, number)
    files = sorted((tmp_path / "outbox").iterdir())
    assert len(files) == 3 and all(f.suffix == ".eml" for f in files)
    for message_id, raw in sent.items():
        path = outbox.path_for(message_id)
        assert path.read_bytes() == raw
        assert path.name.startswith(message_id.strip("<>"))
    assert outbox.parallelism == 1


def test_outbox_is_idempotent_per_message_id(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    send(outbox, 1)
    (path,) = tmp_path.iterdir()
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    send(outbox, 1)
    assert list(tmp_path.iterdir()) == [path]
    assert path.stat().st_mtime_ns == before  # unchanged bytes are not rewritten
    outbox.send(SENDER, "lezer1@example.nl", b"Subject: retry\r\n\r\nnew\r\n", message(1)[2])
    assert list(tmp_path.iterdir()) == [path] and path.read_bytes().startswith(b"Subject: retry")


@pytest.mark.parametrize(
    "message_id",
    [
        "<../../etc/passwd@evil.example>",
        "<a/b/c@x>",
        "<..@..>",
        "<.hidden@x>",
        "</absolute@x>",
        "<a\\b@x>",
        "<" + "x" * 500 + "@x>",
        "<ünï@x>",
        "..",
    ],
)
def test_outbox_file_names_stay_inside_the_folder(tmp_path: Path, message_id: str) -> None:
    folder = tmp_path / "outbox"
    outbox = OutboxTransport(folder)
    outbox.send(SENDER, "a@example.nl", b"Subject: x\r\n\r\nx\r\n", message_id)
    (written,) = folder.iterdir()
    assert written.resolve().parent == folder.resolve()
    assert not written.name.startswith(".") and len(written.name) < 200
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [written]


def test_outbox_names_keep_different_ids_apart(tmp_path: Path) -> None:
    assert outbox_filename("<a/b@x>") != outbox_filename("<a_b@x>")
    assert outbox_filename("<a@x>") == outbox_filename("<a@x>")
    with pytest.raises(ValueError):
        outbox_filename("<a@x>\r\nX: 1")


def test_outbox_write_failure_is_transient(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(DeliveryError) as excinfo:
        send(OutboxTransport(blocker), 1)
    assert excinfo.value.kind == "transient"


# --- the factory, the fake and the error ------------------------------------------------------------
def test_make_transport(tmp_path: Path) -> None:
    outbox = make_transport("outbox", outbox_dir=tmp_path)
    assert isinstance(outbox, OutboxTransport)
    assert make_transport("smtp", host="mail.example.nl").port == 587  # type: ignore[attr-defined]
    implicit = make_transport("smtp", host="mail.example.nl", starttls=False, ssl=True)
    assert implicit.port == 465  # type: ignore[attr-defined]
    relay = make_transport("smtp", starttls=False)
    assert relay.port == 25  # type: ignore[attr-defined]
    smtp = make_transport("smtp", port=2525, connections=3, rate=5)
    assert smtp.parallelism == 3
    with pytest.raises(ValueError, match="unknown transport"):
        make_transport("carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outbox_dir"):
        make_transport("outbox")


def test_memory_transport_records_and_fails_on_request() -> None:
    failure = DeliveryError("weg@example.nl", "550 no such user", kind="permanent", code=550)
    memory = MemoryTransport(failures={"weg@example.nl": failure})
    send(memory, 1)
    with pytest.raises(DeliveryError) as excinfo:
        send(memory, 2, "weg@example.nl")
    assert excinfo.value is failure
    assert [m.recipient for m in memory.sent] == ["lezer1@example.nl"]


def test_delivery_error_keeps_kind_and_code_and_stays_compatible() -> None:
    old_style = DeliveryError("a@example.nl", "refused")
    assert (old_style.kind, old_style.code, str(old_style)) == (
        "permanent",
        None,
        "a@example.nl: refused",
    )
    error = DeliveryError("a@example.nl", "lost", kind="unknown", code=None)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.recipient, copy.message, copy.kind, copy.code) == (
        "a@example.nl",
        "lost",
        "unknown",
        None,
    )


# --- RFC 2920 pipelining, seen on the wire ---------------------------------------------------------
class StrictPipeliningServer:
    """A raw-socket SMTP server that offers PIPELINING and answers the envelope only once MAIL,
    RCPT and DATA have all arrived: a client that waits for each reply before the next command
    gets no answer (and times out). Records what it was sent, per message.

    `refuse` maps a recipient to the RCPT reply it gets; DATA is then answered 354 anyway, as a
    sloppy server might, so the client has to end that data phase empty. With `hold`, the
    reply to each of the first `hold` messages waits until the next envelope has arrived: a
    client that waits for that reply before writing the next envelope gets no answer."""

    def __init__(self, refuse: dict[str, bytes] | None = None, hold: int = 0) -> None:
        self.refuse = refuse or {}
        self.hold = hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.envelopes: list[bytes] = []
        self.messages: list[bytes] = []
        self.error: BaseException | None = None
        self.resets = self.empty_data = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(5)
            with conn:
                conn.sendall(b"220 strict ESMTP\r\n")
                buffer = self._read_until(conn, b"", b"\r\n")
                assert buffer.upper().startswith(b"EHLO"), buffer
                conn.sendall(b"250-strict\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
                buffer = b""
                while True:
                    buffer = self._read_until(conn, buffer, b"\r\n")
                    if buffer.upper().startswith(b"QUIT"):
                        conn.sendall(b"221 bye\r\n")
                        return
                    if buffer.upper().startswith(b"RSET"):
                        buffer = buffer.partition(b"\r\n")[2]
                        self.resets += 1
                        conn.sendall(b"250 reset\r\n")
                        continue
                    # nothing is answered before the whole envelope is here
                    buffer = self._read_until(conn, buffer, b"DATA\r\n")
                    envelope, _, buffer = buffer.partition(b"DATA\r\n")
                    self.envelopes.append(envelope + b"DATA\r\n")
                    refused = next((r for a, r in self.refuse.items() if f"<{a}>".encode() in envelope), None)
                    conn.sendall(b"250 ok\r\n" + (refused or b"250 ok") + b"\r\n354 go ahead\r\n")
                    if refused:  # the client must end the data phase at once, empty
                        buffer = self._read_until(conn, buffer, b"\r\n")
                        line, _, buffer = buffer.partition(b"\r\n")
                        assert line == b".", line
                        self.empty_data += 1
                        conn.sendall(b"554 no valid recipients\r\n")
                        continue
                    buffer = self._read_until(conn, buffer, b"\r\n.\r\n")
                    message, _, buffer = buffer.partition(b"\r\n.\r\n")
                    self.messages.append(message)
                    if len(self.messages) <= self.hold:
                        buffer = self._read_until(conn, buffer, b"DATA\r\n")
                    conn.sendall(b"250 queued\r\n")
        except BaseException as exc:  # reported by the test
            self.error = exc

    @staticmethod
    def _read_until(conn: socket.socket, buffer: bytes, marker: bytes) -> bytes:
        while marker not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed while waiting for {marker!r}: {buffer[-200:]!r}")
            buffer += chunk
        return buffer


def test_the_envelope_is_pipelined_when_the_server_offers_it() -> None:
    server = StrictPipeliningServer()
    transport = client(server.port, timeout=3)
    sent = [send(transport, number) for number in (1, 2)]
    transport.close()
    server.thread.join(5)
    assert server.error is None, server.error
    assert [e.count(b"\r\n") for e in server.envelopes] == [3, 3]
    assert server.envelopes[0].startswith(b"MAIL FROM:<nieuwsbrief@ai-nieuws.example.nl> SIZE=")
    assert b"RCPT TO:<lezer2@example.nl>\r\nDATA\r\n" in server.envelopes[1]
    assert [m + b"\r\n" for m in server.messages] == sent  # WireSafe: nothing to un-stuff


def test_a_server_that_starts_data_for_a_refused_recipient_gets_an_empty_data_phase() -> None:
    """Pipelined, the client sends DATA before it knows RCPT was refused; if the server still
    answers 354, the client ends that data phase empty (nothing is delivered), resets, reports
    the refusal, and the connection serves the next message."""
    server = StrictPipeliningServer(refuse={"lezer1@example.nl": b"550 5.1.1 no such user"})
    transport = client(server.port, timeout=3)
    with pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    assert excinfo.value.kind == "permanent" and excinfo.value.code == 550
    sent = send(transport, 2)
    assert transport.connections_opened == 1
    transport.close()
    server.thread.join(5)
    assert server.error is None, server.error
    assert (server.empty_data, server.resets) == (1, 1)
    assert [m + b"\r\n" for m in server.messages] == [sent]


# --- streams: many messages over one session ---------------------------------------------------------
def outgoing(number: int, recipient: str = "") -> Outgoing:
    return Outgoing(*message(number, recipient), tag=number)


def stream_all(transport: SMTPTransport, numbers: Iterable[int]) -> list[tuple[Any, BaseException | None]]:
    """(tag, error) of each message, as the stream answered them."""
    return [(item.tag, error) for item, error in transport.stream(SENDER, map(outgoing, numbers))]


def test_a_stream_writes_each_message_with_the_next_envelope() -> None:
    """One round trip per message: the server holds its reply to each message until the next
    envelope is there, so a client that waited for it first would time out."""
    server = StrictPipeliningServer(hold=3)
    transport = client(server.port, timeout=3)
    answers = stream_all(transport, [1, 2, 3, 4])
    transport.close()
    server.thread.join(5)
    assert server.error is None, server.error
    assert answers == [(1, None), (2, None), (3, None), (4, None)]
    assert [m + b"\r\n" for m in server.messages] == [message(n)[1] for n in (1, 2, 3, 4)]
    assert transport.connections_opened == 1


def test_one_by_one_sending_does_not_wait_for_a_next_envelope() -> None:
    """`send` has no next message: against the holding server it times out, which is what
    makes the test above a proof."""
    server = StrictPipeliningServer(hold=1)
    transport = client(server.port, timeout=0.5)
    with pytest.raises(DeliveryError) as excinfo:
        send(transport, 1)
    transport.close()
    assert excinfo.value.kind == "unknown"


def test_a_stream_over_a_refusing_server_answers_each_message(start_server: Start) -> None:
    handler = Recorder(
        refuse={"lezer2@example.nl": "550 5.1.1 No such user"},
        refuse_data={"lezer4@example.nl": "554 5.6.0 Message rejected"},
    )
    server, handler = start_server(handler)
    with plain(server) as transport:
        answers = stream_all(transport, range(1, 7))
    assert [tag for tag, _ in answers] == [1, 2, 3, 4, 5, 6]
    errors = {tag: error for tag, error in answers if error is not None}
    assert {tag: (e.kind, e.code) for tag, e in errors.items()} == {  # type: ignore[attr-defined]
        2: ("permanent", 550), 4: ("permanent", 554)}
    assert handler.recipients() == [f"lezer{n}@example.nl" for n in (1, 3, 5, 6)]
    assert transport.connections_opened == 1


@pytest.mark.parametrize("close_with_421", [True, False], ids=["421", "dropped"])
def test_a_stream_survives_the_server_closing_mid_batch(
    start_server: Start, close_with_421: bool
) -> None:
    """The next envelope may be in flight when the session goes: that message is sent on a
    new session, once."""
    handler = Recorder(per_connection=3, close_with_421=close_with_421)
    server, _ = start_server(handler)
    with plain(server) as transport:
        answers = stream_all(transport, range(10))
        assert transport.connections_opened == 4
    assert answers == [(n, None) for n in range(10)]
    assert handler.recipients() == [f"lezer{n}@example.nl" for n in range(10)]


def test_a_stream_losing_the_connection_after_a_message_reports_it_unknown(
    start_server: Start,
) -> None:
    """REL-03 in a stream: the message whose reply never came is "unknown" (never retried);
    the one whose envelope went with it was not accepted, and goes out on a new session."""
    server, handler = start_server(Recorder(drop_after_data={"lezer2@example.nl"}))
    with plain(server) as transport:
        answers = stream_all(transport, [1, 2, 3, 4])
        assert transport.connections_opened == 2
    kinds = [(tag, getattr(error, "kind", None)) for tag, error in answers]
    assert kinds == [(1, None), (2, "unknown"), (3, None), (4, None)]
    assert handler.recipients() == [f"lezer{n}@example.nl" for n in (1, 2, 3, 4)]


def test_a_stream_answers_a_malformed_address_and_sends_the_rest(start_server: Start) -> None:
    server, handler = start_server()
    with plain(server) as transport:
        answers = stream_all(transport, [1, 2, 3])
        items = [outgoing(1), outgoing(2)._replace(recipient="bad address@example.nl"), outgoing(3)]
        mixed = [(item.tag, error) for item, error in transport.stream(SENDER, items)]
    assert answers == [(1, None), (2, None), (3, None)]
    assert [tag for tag, error in mixed if error is None] == [1, 3]
    assert [type(error) for tag, error in mixed if tag == 2] == [ValueError]


def test_a_stream_told_to_stop_begins_nothing_more_and_aborts_an_envelope_in_flight(
    start_server: Start,
) -> None:
    """Stopped after the first message: the ones already taken come back NotSent; a pipelined
    envelope already written is aborted by closing the session, never ended empty."""
    server, handler = start_server()
    stopped = threading.Event()
    with plain(server) as transport:
        answers = []
        for item, error in transport.stream(SENDER, map(outgoing, [1, 2, 3]), stopped.is_set):
            answers.append((item.tag, type(error).__name__ if error else None))
            stopped.set()
        # with pipelining the third was taken too, to go with the second's message
        assert answers[0] == (1, None) and answers[1] == (2, "NotSent")
        assert answers[2:] == ([(3, "NotSent")] if handler.pipelining else [])
        send(transport, 4)  # the transport carries on; a session left out of step was closed
        opened = transport.connections_opened
    assert handler.recipients() == ["lezer1@example.nl", "lezer4@example.nl"]
    assert opened == (2 if handler.pipelining else 1)


def test_a_stream_left_early_closes_a_session_with_an_envelope_in_flight(
    start_server: Start,
) -> None:
    server, handler = start_server()
    with plain(server) as transport:
        answers = transport.stream(SENDER, map(outgoing, [1, 2, 3]))
        item, error = next(answers)
        answers.close()
        send(transport, 4)
        opened = transport.connections_opened
    assert (item.tag, error) == (1, None)
    assert handler.recipients() == ["lezer1@example.nl", "lezer4@example.nl"]
    assert opened == (2 if handler.pipelining else 1)


def test_a_stream_on_a_closed_transport_raises(start_server: Start) -> None:
    server, _ = start_server()
    transport = plain(server)
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(transport.stream(SENDER, [outgoing(1)]))


def test_a_stream_whose_messages_fail_mid_exchange_never_reuses_that_session(
    start_server: Start,
) -> None:
    """Taking the next message can fail while the server still owes replies (with pipelining,
    the next envelope's too). That session is closed, so a later message can never read those
    replies as its own and have its content delivered under another envelope."""
    server, handler = start_server()

    def failing() -> Iterator[Outgoing]:
        yield outgoing(1)
        yield outgoing(2)
        raise RuntimeError("composing failed")

    with plain(server) as transport:
        answers = transport.stream(SENDER, failing())
        with pytest.raises(RuntimeError, match="composing failed"):
            for _answer in answers:
                pass
        sent = send(transport, 4)
        opened = transport.connections_opened
    assert opened == 2
    assert handler.recipients().count("lezer4@example.nl") == 1
    assert handler.recipients()[-1] == "lezer4@example.nl" and handler.received[-1].data == sent
    # Without pipelining the second message was written whole before its reply was due, so the
    # server took it (the caller has to count it unknown); with pipelining only its envelope
    # was, and closing the session aborted it.
    expected = ["lezer1@example.nl"] + ([] if handler.pipelining else ["lezer2@example.nl"])
    assert handler.recipients()[:-1] == expected
