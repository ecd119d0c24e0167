"""The Starlette application: pages, forms and the endpoints the mails link to.

`create_app(config)` builds it; `newsletter serve` runs it with uvicorn. Routes (see
`WebService.routes`): the home page, subscribe (double opt-in), confirm, unsubscribe (RFC 8058),
preferences, the editors' preview, and the published feeds and archive.

Rules kept here:

- A GET never changes anything: the links in mails (confirm, unsubscribe) open a page with a
  button, because mail scanners prefetch links (standards UNSUB-05). The one-click unsubscribe is
  a POST that needs no cookie and no CSRF field, since the signed token is the authority; it
  answers 200 without a redirect, and repeating it is harmless (UNSUB-04, UNSUB-06).
- Subscribing always answers the same page, whatever the address's state, and does the work
  (store, mail) after the response in a background task, so neither content nor timing tells
  whether an address is known. Nothing is written for an address that is already in the store:
  what it asked for travels in the signed confirm token and is applied only on confirmation.
- Forms that change choices (subscribe, preferences) carry a signed double-submit CSRF token.
- Tokens are read with `tokens.read_token` (HMAC, constant-time compare, purpose-bound).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from babel.dates import format_datetime
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .. import links
from ..config import AudienceConfig, Config
from ..content import slugify
from ..delivery import Transport
from ..digest import language_of
from ..errors import ConfigError
from ..feeds import FORMAT_FILES, FORMAT_NAMES, FORMAT_TYPES
from ..model import Subscriber
from ..services import make_transport
from ..store import InvalidEmailError, NotFoundError, Store, normalize_email
from ..tokens import TokenClaims, TokenError, read_token, secret_key_from_env
from . import files
from .preview import AudiencePreview, audience_preview, load_articles
from .security import (
    CSP_FRAMEABLE_DIGEST,
    CSP_PREVIEW_PAGE,
    CSRF_FIELD,
    Csrf,
    RateLimiter,
    SecurityHeaders,
    apply_default_headers,
    basic_auth_ok,
)
from .strings import strings_for
from .subscriptions import Subscriptions, mask

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "web"
SUBSCRIBE_WINDOW = timedelta(minutes=10)  # web.subscribe_limit requests per client per window
MAX_FORM_BYTES = 16 * 1024
MAX_NAME = 100
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ERROR_KEYS = {400: "err_400", 401: "err_401", 403: "err_403", 404: "err_404", 405: "err_405",
               411: "err_411", 413: "err_413", 429: "err_429", 500: "err_500"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FeedLink:
    type: str
    title: str  # for the autodiscovery <link>
    label: str  # for the visible link
    path: str  # served by this app, e.g. /labels/beslisser/index.xml
    url: str  # canonical absolute URL (site.url), what the feed's self link says


def create_app(
    config: Config,
    *,
    now: Callable[[], datetime] = _utcnow,
    store: Store | None = None,
    transport: Transport | None = None,
) -> Starlette:
    """The web application for this config.

    Args:
        now: the clock (aware datetimes); tests pass a fixed one.
        store: default: `Store.open(config.store_url)`, closed on shutdown.
        transport: for confirmation mails; default: the configured one, closed on shutdown.

    Raises:
        ConfigError: NEWSLETTER_SECRET_KEY is missing or too short, the audience ids do not fit
            in a confirm token, or the transport's credentials are missing.
        StoreError: the store cannot be opened.
    """
    key = secret_key_from_env()
    joined = ",".join(a.id for a in config.audiences).encode("utf-8")
    if len(joined) > 200:
        raise ConfigError("audiences", "the audience ids together exceed 200 bytes (confirm token)")
    owned_store = store is None
    the_store = Store.open(config.store_url) if store is None else store
    try:
        the_transport = make_transport(config) if transport is None else transport
    except BaseException:
        if owned_store:
            the_store.close()
        raise
    password = os.environ.get(config.web.preview_password_env, "") if config.web.preview_password_env else ""
    service = WebService(config, the_store, the_transport, key, now, password)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        moment = now()
        # addresses that never confirmed are not kept past their link's life (data minimisation)
        cutoff = moment - timedelta(hours=config.web.confirm_hours)
        await run_in_threadpool(the_store.forget_pending, cutoff, moment)
        try:
            yield
        finally:
            if transport is None:
                the_transport.close()
            if owned_store:
                the_store.close()

    app = Starlette(
        routes=service.routes(),
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: service.http_error, Exception: service.server_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # no redirects at all: nothing to turn into an open one
    app.state.service = service
    return app


class WebService:
    """The endpoints, sharing config, store, transport, key, clock and the UI strings."""

    def __init__(
        self,
        config: Config,
        store: Store,
        transport: Transport,
        key: bytes,
        now: Callable[[], datetime],
        preview_password: str,
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.key = key
        self.now = now
        self.preview_password = preview_password
        self.language = language_of(config.site.language)
        self.t = strings_for(config.site.language)
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(("html",), default_for_string=True, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.csrf = Csrf(key)
        self.subscribe_limit = RateLimiter(config.web.subscribe_limit, SUBSCRIBE_WINDOW)
        self.audiences = {a.id: a for a in config.audiences}
        self.css = (TEMPLATES / "web.css").read_bytes()
        self.subscriptions = Subscriptions(config, store, transport, key, self.env, self.t, self.language)

    def routes(self) -> list[Route]:
        site_files = [Route(f"/{name}", self.site_file, methods=["GET"]) for name in files.SITE_FILES]
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/static/web.css", self.stylesheet, methods=["GET"]),
            Route("/subscribe", _get_post(self.subscribe_form, self.subscribe), methods=["GET", "POST"]),
            Route(links.CONFIRM, _get_post(self.confirm_page, self.confirm), methods=["GET", "POST"]),
            Route(links.UNSUBSCRIBE, _get_post(self.unsubscribe_page, self.unsubscribe),
                  methods=["GET", "POST"]),
            Route(links.PREFERENCES, _get_post(self.preferences_page, self.preferences),
                  methods=["GET", "POST"]),
            Route("/preview", self.preview_index, methods=["GET"]),
            Route("/preview/{audience}", self.preview_audience, methods=["GET"]),
            Route("/preview/{audience}/digest.html", self.preview_digest, methods=["GET"]),
            *site_files,
            Route("/labels/{slug}/{name}", self.group_file, methods=["GET"]),
            Route("/tags/{slug}/{name}", self.group_file, methods=["GET"]),
            Route("/archive/{audience}", self.archive_file, methods=["GET"]),
            Route("/archive/{audience}/", self.archive_file, methods=["GET"]),
            Route("/archive/{audience}/{name}", self.archive_file, methods=["GET"]),
        ]

    # --- rendering ------------------------------------------------------------------------------

    def page(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        cookie: str | None = None,
        background: BackgroundTask | None = None,
        **context: Any,
    ) -> Response:
        """An HTML page in the site language; never cached (pages may show personal data)."""
        context.setdefault("head_feeds", self.site_feeds())
        context.setdefault("noindex", False)
        html = self.env.get_template(template).render(
            t=self.t,
            lang=self.config.site.language,
            site_title=self.config.site.title,
            sender_line=self.config.email.sender_line,
            **context,
        )
        response = HTMLResponse(
            html, status_code=status, headers={"cache-control": "no-store", **(headers or {})},
            background=background,
        )
        if cookie is not None:
            Csrf.set_cookie(response, cookie, request.url.scheme == "https")
        return response

    def form_page(self, request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
        """A page with a CSRF-protected form: gives the browser its CSRF cookie if needed."""
        field, cookie = self.csrf.issue(request)
        return self.page(request, template, status=status, cookie=cookie, csrf=field, **context)

    def error(
        self, request: Request, status: int, body: str | None = None,
        headers: Mapping[str, str] | None = None, title: str | None = None,
    ) -> Response:
        prefix = _ERROR_KEYS.get(status, "err_400")
        return self.page(
            request, "error.html", status=status, headers=headers, noindex=True,
            title=title or self.t[f"{prefix}_title"],
            body=body if body is not None else self.t.get(f"{prefix}_body", ""),
            status_code=status,
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() in ("allow", "retry-after", "www-authenticate")}
        return self.error(request, exc.status_code, headers=headers)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        # Runs outside the middleware stack (Starlette's ServerErrorMiddleware), so the security
        # headers are added here.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        response = self.error(request, 500)
        apply_default_headers(response.headers, request.url.scheme == "https")
        return response

    def site_feeds(self) -> list[FeedLink]:
        return [link for fmt in self.config.feeds.formats
                if (link := self._feed_link("", fmt, self.config.site.title)) is not None]

    def audience_feeds(self, audience: AudienceConfig) -> list[FeedLink]:
        """The published feeds an audience's readers can follow: one per label (the site's for
        an audience of every label) and the RSS feed of its past issues."""
        site = self.config.site.title
        if not audience.labels:
            groups = [("", site)]
        elif self.config.feeds.per_label:
            groups = [(f"labels/{slugify(label)}", f"{site} – {label}") for label in audience.labels]
        else:
            groups = []
        found = [link for folder, title in groups for fmt in self.config.feeds.formats
                 if (link := self._feed_link(folder, fmt, title)) is not None]
        archive = f"archive/{audience.id}/index.xml"
        if (self.config.site.output_dir / archive).is_file():
            found.append(FeedLink(FORMAT_TYPES["rss"], f"{self.t['archive']}: {audience.title}",
                                  f"{self.t['archive']} (RSS)", f"/{archive}",
                                  f"{self.config.site.url}/{archive}"))
        return found

    def _feed_link(self, folder: str, fmt: str, title: str) -> FeedLink | None:
        rel = f"{folder}/{FORMAT_FILES[fmt]}" if folder else FORMAT_FILES[fmt]
        if not (self.config.site.output_dir / rel).is_file():
            return None
        return FeedLink(FORMAT_TYPES[fmt], f"{title} ({FORMAT_NAMES[fmt]})", FORMAT_NAMES[fmt],
                        f"/{rel}", f"{self.config.site.url}/{rel}")

    def titles(self, audience_ids: Iterable[str]) -> list[str]:
        """Audience titles in config order (ids no longer configured are shown as they are)."""
        wanted = list(audience_ids)
        known = [a.title for a in self.config.audiences if a.id in wanted]
        return known + [a for a in wanted if a not in self.audiences]

    # --- home and subscribe -----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        items = []
        head = self.site_feeds()
        for audience in self.config.audiences:
            feeds = self.audience_feeds(audience)
            head += [f for f in feeds if f not in head]
            archive = self.config.site.output_dir / "archive" / audience.id / "index.html"
            items.append({"audience": audience, "feeds": feeds,
                          "archive": f"/archive/{audience.id}/" if archive.is_file() else ""})
        return self.page(request, "home.html", title=self.t["home_title"], audiences=items,
                         site_feeds=self.site_feeds(), head_feeds=head)

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.css, media_type="text/css; charset=utf-8",
                        headers={"cache-control": "public, max-age=3600"})

    async def subscribe_form(self, request: Request) -> Response:
        chosen = [a for a in request.query_params.getlist("audience") if a in self.audiences]
        return self.subscribe_page(request, chosen=chosen)

    def subscribe_page(
        self, request: Request, *, status: int = 200, errors: Sequence[str] = (),
        email: str = "", name: str = "", chosen: Sequence[str] = (),
    ) -> Response:
        return self.form_page(
            request, "subscribe.html", status=status, title=self.t["subscribe_title"],
            audiences=self.config.audiences, errors=errors, email=email, name=name, chosen=set(chosen),
        )

    async def subscribe(self, request: Request) -> Response:
        now = self.now()
        wait = self.subscribe_limit.hit(_client(request), now)
        if wait is not None:
            seconds = max(1, math.ceil(wait.total_seconds()))
            body = self.t["err_429_body"].format(minutes=math.ceil(seconds / 60))
            return self.error(request, 429, body, headers={"retry-after": str(seconds)})
        form = await _read_form(request)
        if not self.csrf.valid(request, form.get(CSRF_FIELD)):
            return self.error(request, 403, self.t["err_csrf_body"])
        raw_email = str(form.get("email", "")).strip()
        raw_name = str(form.get("name", ""))
        chosen = [str(v) for v in form.getlist("audience")]
        errors = []
        try:
            address = normalize_email(raw_email)
        except InvalidEmailError:
            errors.append("err_email")
        name = " ".join(raw_name.split())
        if len(name) > MAX_NAME or _CONTROL.search(raw_name.replace("\r\n", " ")):
            errors.append("err_name")
        audiences = tuple(a for a in dict.fromkeys(chosen) if a in self.audiences)
        if not audiences or len(audiences) != len(set(chosen)):
            errors.append("err_audiences")
        if errors:
            return self.subscribe_page(request, status=400, errors=errors, email=raw_email[:320],
                                       name=name[:MAX_NAME], chosen=audiences)
        # The same answer for every address; the work happens after the response is sent.
        task = BackgroundTask(self.subscriptions.subscribe, address, name, audiences, now)
        return self.page(
            request, "message.html", background=task, title=self.t["check_title"],
            paragraphs=[self.t["check_body"].format(hours=self.config.web.confirm_hours),
                        self.t["check_spam"]],
        )

    # --- token pages --------------------------------------------------------------------------

    def claims(self, request: Request, purpose: str) -> TokenClaims | Response:
        """The token's claims, or the 400 page saying what is wrong with the link."""
        try:
            return read_token(self.key, request.path_params["token"], purpose, self.now())
        except TokenError as exc:
            log.info("%s %s: refused token (%s)", request.method, purpose, exc.reason)
            key = "err_token_expired" if exc.reason == "expired" else "err_token_body"
            return self.error(request, 400, self.t[key], title=self.t["err_token_title"])

    async def subscriber_for(self, request: Request, purpose: str) -> tuple[TokenClaims, Subscriber] | Response:
        claims = self.claims(request, purpose)
        if isinstance(claims, Response):
            return claims
        subscriber = await run_in_threadpool(self.store.get_subscriber, claims.subscriber_id)
        if subscriber is None:
            return self.error(request, 400, self.t["err_token_unknown"], title=self.t["err_token_title"])
        return claims, subscriber

    async def confirm_page(self, request: Request) -> Response:
        found = await self.subscriber_for(request, "confirm")
        if isinstance(found, Response):
            return found
        claims, subscriber = found
        return self.page(
            request, "action.html", noindex=True, title=self.t["confirm_title"],
            paragraphs=[self.t["confirm_body"].format(email=mask(subscriber.email))],
            items=self.titles(claims.audience_id.split(",")),
            action=links.CONFIRM.format(token=request.path_params["token"]),
            fields=[], button=self.t["confirm_button"], link=None,
        )

    async def confirm(self, request: Request) -> Response:
        found = await self.subscriber_for(request, "confirm")
        if isinstance(found, Response):
            return found
        claims, subscriber = found
        now = self.now()
        wanted = [a for a in claims.audience_id.split(",") if a]
        subscriber, memberships = await run_in_threadpool(self.subscriptions.confirm, subscriber, wanted, now)
        active = [a for a, status in memberships.items() if status == "active"]
        email = mask(subscriber.email)
        if subscriber.status != "active":
            paragraphs = [self.t["confirm_gone"]]
            active = []
        elif active:
            paragraphs = [self.t["confirmed_body"].format(email=email)]
        else:
            paragraphs = [self.t["confirmed_none"].format(email=email)]
        manage = self.manage_link(subscriber, now)
        return self.page(request, "message.html", noindex=True, title=self.t["confirmed_title"]
                         if subscriber.status == "active" else self.t["confirm_title"],
                         paragraphs=paragraphs, items=self.titles(active), after=[], link=manage)

    def manage_link(self, subscriber: Subscriber, now: datetime) -> dict[str, str] | None:
        if subscriber.status not in ("active", "pending"):
            return None
        token = self.subscriptions.preferences_token(subscriber.id, now)
        return {"href": links.PREFERENCES.format(token=token), "text": self.t["manage"]}

    async def unsubscribe_page(self, request: Request) -> Response:
        claims = self.claims(request, "unsubscribe")
        if isinstance(claims, Response):
            return claims
        subscriber = await run_in_threadpool(self.store.get_subscriber, claims.subscriber_id)
        audience = self.titles([claims.audience_id])[0]
        if subscriber is None:
            return self.page(request, "message.html", noindex=True, title=self.t["unsub_title"],
                             paragraphs=[self.t["err_token_unknown"]])
        email = mask(subscriber.email)
        memberships = await run_in_threadpool(self.store.memberships, subscriber.id)
        if memberships.get(claims.audience_id) != "active" or subscriber.status != "active":
            return self.page(request, "message.html", noindex=True, title=self.t["unsub_title"],
                             paragraphs=[self.t["unsub_already"].format(email=email, audience=audience)],
                             link=self.manage_link(subscriber, self.now()))
        return self.page(
            request, "action.html", noindex=True, title=self.t["unsub_title"],
            paragraphs=[self.t["unsub_body"].format(email=email, audience=audience)], items=[],
            action=links.UNSUBSCRIBE.format(token=request.path_params["token"]),
            fields=[("List-Unsubscribe", "One-Click")], button=self.t["unsub_button"],
            link=self.manage_link(subscriber, self.now()),
        )

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click (and the page's button): the token is the authority, so no cookie
        and no CSRF field are needed; 200, never a redirect; repeating it changes nothing."""
        claims = self.claims(request, "unsubscribe")
        if isinstance(claims, Response):
            return claims
        now = self.now()
        try:
            changed = await run_in_threadpool(self.store.unsubscribe, claims.subscriber_id, claims.audience_id, now)
        except NotFoundError:
            changed = False  # the address was removed: it gets nothing anyway
        log.info("unsubscribe %s from %s: %s", claims.subscriber_id, claims.audience_id,
                 "done" if changed else "already")
        audience = self.titles([claims.audience_id])[0]
        return self.page(request, "message.html", noindex=True, title=self.t["unsub_done_title"],
                         paragraphs=[self.t["unsub_done_body"].format(audience=audience)])

    async def preferences_page(self, request: Request) -> Response:
        found = await self.subscriber_for(request, "preferences")
        if isinstance(found, Response):
            return found
        return await self.preferences_form(request, found[1])

    async def preferences_form(
        self, request: Request, subscriber: Subscriber, *, notices: Sequence[str] = (), saved: bool = False
    ) -> Response:
        memberships = await run_in_threadpool(self.store.memberships, subscriber.id)
        rows = [{"audience": a, "active": memberships.get(a.id) == "active",
                 "left": memberships.get(a.id) == "unsubscribed"} for a in self.config.audiences]
        return self.form_page(
            request, "preferences.html", noindex=True, title=self.t["prefs_title"],
            email=mask(subscriber.email), rows=rows, saved=saved, notices=notices,
            gone=subscriber.status not in ("active", "pending"),
            action=links.PREFERENCES.format(token=request.path_params["token"]),
        )

    async def preferences(self, request: Request) -> Response:
        found = await self.subscriber_for(request, "preferences")
        if isinstance(found, Response):
            return found
        subscriber = found[1]
        form = await _read_form(request)
        if not self.csrf.valid(request, form.get(CSRF_FIELD)):
            return self.error(request, 403, self.t["err_csrf_body"])
        wanted = {str(v) for v in form.getlist("audience")} & set(self.audiences)
        now = self.now()
        if form.get("action") == "unsubscribe_all":
            await run_in_threadpool(self.store.remove_subscriber, subscriber.email, now)
        elif subscriber.status in ("active", "pending", "unsubscribed"):
            await run_in_threadpool(self.subscriptions.save_preferences, subscriber, wanted, now)
        fresh = await run_in_threadpool(self.store.get_subscriber, subscriber.id)
        return await self.preferences_form(request, fresh or subscriber, notices=[], saved=True)

    # --- preview --------------------------------------------------------------------------------

    def preview_denied(self, request: Request) -> Response | None:
        if not self.preview_password:
            body = self.t["err_preview_closed"].format(env=self.config.web.preview_password_env)
            return self.error(request, 403, body)
        if not basic_auth_ok(request.headers.get("authorization"), self.config.web.preview_user,
                             self.preview_password):
            return self.error(request, 401, headers={
                "www-authenticate": 'Basic realm="newsletter preview", charset="UTF-8"'})
        return None

    def previews(self, audiences: Sequence[AudienceConfig], now: datetime) -> list[AudiencePreview]:
        catalog = load_articles(self.config)
        articles = list(catalog.articles)
        return [audience_preview(self.config, self.store, a, articles, catalog.rendered, now)
                for a in audiences]

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return self.t["by_hand"]
        return format_datetime(moment, "EEEE d MMMM y, HH:mm", tzinfo=self.config.site.tz,
                               locale=self.language)

    def preview_audience_of(self, request: Request) -> AudienceConfig:
        audience = self.audiences.get(request.path_params["audience"])
        if audience is None:
            raise HTTPException(404)
        return audience

    async def preview_index(self, request: Request) -> Response:
        denied = self.preview_denied(request)
        if denied is not None:
            return denied
        previews = await run_in_threadpool(self.previews, self.config.audiences, self.now())
        return self.page(request, "preview_index.html", noindex=True, title=self.t["preview_title"],
                         previews=previews, when=self.when)

    async def preview_audience(self, request: Request) -> Response:
        denied = self.preview_denied(request)
        if denied is not None:
            return denied
        audience = self.preview_audience_of(request)
        (preview,) = await run_in_threadpool(self.previews, [audience], self.now())
        return self.page(request, "preview_audience.html", noindex=True, title=audience.title,
                         preview=preview, when=self.when,
                         headers={"content-security-policy": CSP_PREVIEW_PAGE})

    async def preview_digest(self, request: Request) -> Response:
        """The digest HTML alone, for the preview page's sandboxed iframe: the only document
        this service lets be framed, and only by its own pages."""
        denied = self.preview_denied(request)
        if denied is not None:
            return denied
        audience = self.preview_audience_of(request)
        (preview,) = await run_in_threadpool(self.previews, [audience], self.now())
        if not preview.ready:
            raise HTTPException(404)
        return HTMLResponse(preview.html, headers={
            "content-security-policy": CSP_FRAMEABLE_DIGEST, "x-frame-options": "SAMEORIGIN",
            "cache-control": "no-store", "x-robots-tag": "noindex",
        })

    # --- published files ----------------------------------------------------------------------

    def published(self, request: Request, relpath: str, content_type: str | None) -> Response:
        if content_type is None:
            raise HTTPException(404)
        response = files.file_response(self.config.site.output_dir, relpath, content_type,
                                       request.headers, request.method)
        if response is None:
            raise HTTPException(404)
        return response

    async def site_file(self, request: Request) -> Response:
        name = request.url.path.lstrip("/")
        return self.published(request, name, files.media_type(name))

    async def group_file(self, request: Request) -> Response:
        folder = request.url.path.split("/")[1]
        slug, name = request.path_params["slug"], request.path_params["name"]
        if not files.SLUG.fullmatch(slug):
            raise HTTPException(404)
        return self.published(request, f"{folder}/{slug}/{name}", files.media_type(name, folder))

    async def archive_file(self, request: Request) -> Response:
        audience = request.path_params["audience"]
        name = request.path_params.get("name", "index.html")
        if not files.AUDIENCE_ID.fullmatch(audience):
            raise HTTPException(404)
        return self.published(request, f"archive/{audience}/{name}", files.media_type(name, "archive"))


Endpoint = Callable[[Request], Awaitable[Response]]


def _get_post(get: Endpoint, post: Endpoint) -> Endpoint:
    """One route for a page and its form, so a 405 lists both methods in Allow."""

    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint


async def _read_form(request: Request) -> FormData:
    """The posted form, refused when its size is unknown (411) or over 16 KiB (413)."""
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411)
    if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        raise HTTPException(413)
    return await request.form(max_files=0, max_fields=50)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"

