"""The web service the mailings link to: subscribe with double opt-in, confirm, one-click
unsubscribe (RFC 8058), preferences, the editors' digest preview, and the published feeds and
archive with conditional GET. `newsletter serve` runs it (see `newsletter.cli_web`).

Modules: `app` (the Starlette application and its endpoints), `subscriptions` (what
subscribe, confirm and preferences do to the store), `security` (headers, CSRF, rate limit,
Basic auth), `files` (published files with ETag/Last-Modified), `mail` (the confirmation
mail), `preview` (the digest as it would be mailed now), `strings` (the UI text per language).
Templates: `newsletter/templates/web/`.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
