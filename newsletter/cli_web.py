"""`newsletter serve`: run the web service (`newsletter.web`) with uvicorn.

Registered on the main group by `cli.py`. Uvicorn handles SIGINT/SIGTERM gracefully: it stops
accepting connections, lets requests in flight (and their background confirmation mails) finish
for up to `GRACEFUL_SECONDS`, then runs the app's shutdown, which closes the store and transport.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import EXIT_CONFIG, EXIT_PROBLEMS, _load, config_option, log_to_stderr
from .errors import ConfigError, NewsletterError

GRACEFUL_SECONDS = 10


@click.command()
@config_option
@click.option("--host", metavar="HOST", help="Address to listen on (default: [web] host).")
@click.option(
    "--port", type=click.IntRange(1, 65535), metavar="PORT", help="Port to listen on (default: [web] port)."
)
def serve(config_path: Path, host: str | None, port: int | None) -> None:
    """Run the web service: subscribe, confirm, unsubscribe, preferences, preview, feeds, archive.

    Needs NEWSLETTER_SECRET_KEY (the same key `newsletter send` signs links with). The preview
    pages open when the variable named by [web] preview_password_env is set. Exit 2 for a
    config error (including a missing key), 1 when the store cannot be opened.
    """
    import uvicorn

    from .web import create_app

    config = _load(config_path)
    log_to_stderr()
    try:
        app = create_app(config)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except NewsletterError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
    listen_host = host or config.web.host
    listen_port = port or config.web.port
    click.echo(f"serving {config.site.title} on http://{listen_host}:{listen_port}/ (links in mails: {config.public_url})")
    uvicorn.run(
        app,
        host=listen_host,
        port=listen_port,
        proxy_headers=True,  # X-Forwarded-For/-Proto from a proxy on 127.0.0.1 (TLS, rate limit)
        forwarded_allow_ips="127.0.0.1",
        server_header=False,
        access_log=False,  # request paths carry tokens; the service logs its own events, masked
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        log_config=None,  # keep the logging set up above
    )
