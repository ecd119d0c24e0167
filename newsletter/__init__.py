"""newsletter: Markdown articles in, RSS/Atom/JSON feeds and email digests out."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger("newsletter").addHandler(logging.NullHandler())
