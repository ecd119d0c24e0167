"""The error hierarchy. Every error carries the value that was wrong.

NewsletterError
├── ConfigError(key, value)        a bad key or value in config.toml
├── ArticleError(path, field, value) one bad article; the build goes on without it
├── FeedError                      a feed could not be produced
├── OutputError(path)              a file could not be written safely
├── RenderError                    a template could not be rendered
├── DeliveryError(recipient, kind) a message could not be delivered (permanent/transient/unknown)
└── StoreError                     the database refused an operation
"""

from __future__ import annotations

from typing import Any, Literal

_MISSING: Any = object()


class NewsletterError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(NewsletterError):
    """A key of config.toml is unknown, missing or has a bad value."""

    def __init__(self, key: str, message: str, value: Any = _MISSING) -> None:
        self.key = key
        self.message = message
        self.value = value
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f" (got {self.value!r})"
        return f"config key '{self.key}': {self.message}{shown}"


class ArticleError(NewsletterError):
    """One article could not be read; names the file and the field."""

    def __init__(self, path: str, field: str | None, message: str, value: Any = _MISSING) -> None:
        self.path = path
        self.field = field
        self.message = message
        self.value = value
        super().__init__(str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # Problems are stored in the index cache; the default pickling would call __init__ with
        # the message only.
        args: tuple[Any, ...] = (self.path, self.field, self.message)
        return (type(self), args if self.value is _MISSING else (*args, self.value))

    def __str__(self) -> str:
        where = f"{self.path}: {self.field}" if self.field else self.path
        shown = "" if self.value is _MISSING else f" (got {_short(self.value)})"
        return f"{where}: {self.message}{shown}"


class FeedError(NewsletterError):
    """A feed could not be built."""


class OutputError(NewsletterError):
    """An output path is unsafe or could not be written."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message))  # raised in feed workers, too


class RenderError(NewsletterError):
    """A template could not be rendered."""


DeliveryErrorKind = Literal["permanent", "transient", "unknown"]


class DeliveryError(NewsletterError):
    """A message could not be delivered to one recipient.

    `kind` says what a retry may do: "permanent" (refused, do not retry), "transient" (not
    delivered, a later retry may work) or "unknown" (the connection was lost after the message
    was sent, so it may have been delivered: a retry risks a duplicate). `code` is the SMTP reply
    code when there was one.
    """

    def __init__(
        self,
        recipient: str,
        message: str,
        *,
        kind: DeliveryErrorKind = "permanent",
        code: int | None = None,
    ) -> None:
        self.recipient = recipient
        self.message = message
        self.kind: DeliveryErrorKind = kind
        self.code = code
        super().__init__(f"{recipient}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling would call __init__ with the formatted text only.
        return (_make_delivery_error, (self.recipient, self.message, self.kind, self.code))


class StoreError(NewsletterError):
    """The store refused an operation."""


def _make_delivery_error(
    recipient: str, message: str, kind: DeliveryErrorKind, code: int | None
) -> DeliveryError:
    return DeliveryError(recipient, message, kind=kind, code=code)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
