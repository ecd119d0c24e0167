"""Concrete collaborators built from config (transport), shared by the CLI and the web service."""

from __future__ import annotations

import os

from .config import Config
from .delivery import Transport
from .errors import ConfigError


def make_transport(config: Config) -> Transport:
    """The configured transport; SMTP credentials come from the named environment variables."""
    from .delivery import make_transport as build

    delivery = config.delivery
    if delivery.transport == "outbox":
        return build("outbox", outbox_dir=delivery.outbox_dir)
    smtp = delivery.smtp
    credentials: dict[str, str | None] = {"username": None, "password": None}
    for key, env in (("username", smtp.username_env), ("password", smtp.password_env)):
        if env:
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"delivery.smtp.{key}_env", f"environment variable {env} is not set")
            credentials[key] = value
    return build(
        "smtp",
        host=smtp.host,
        port=smtp.port,
        starttls=smtp.starttls,
        ssl=smtp.ssl,
        timeout=smtp.timeout,
        connections=smtp.connections,
        rate=smtp.rate,
        username=credentials["username"],
        password=credentials["password"],
    )
