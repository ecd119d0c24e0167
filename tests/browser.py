"""Browser testing helpers: Debian's Chromium driven by Playwright, and a real HTTP server.

Not a test module. Pages are tested the way a reader sees them: served over HTTP on 127.0.0.1
and opened in headless Chromium. conftest.py loads this module as a plugin, so its fixtures
(`chromium_executable`, `chromium_context`, `browser_page`) exist ONCE for the whole session: a
copy imported into each test module would start a second Playwright while the first still runs.
The helpers are imported as usual:

    from browser import BrowserPage, serve_folder

The browser is Debian's (`/usr/bin/chromium`, installed by `bash scripts/test.sh`), started by
Playwright with `executable_path=`; Playwright's own browser download is never used. A missing
browser FAILS the test, it is never skipped: CI runs with CI=true, and a skip there would hide a
machine without a browser.

Every request that does not go to 127.0.0.1 is aborted (and recorded in `BrowserPage.blocked`):
the machine's network is closed, and a test must not depend on it anyway.

Screenshots are written under the test's tmp_path and, when NEWSLETTER_ARTIFACTS names a
folder, copied there too.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "run `bash scripts/test.sh` (it installs Debian's chromium package)"
LOOPBACK = "127.0.0.1"
# --headless itself is passed by Playwright (headless=True); --user-data-dir is the fresh folder
# given to launch_persistent_context (Playwright refuses it in `args`). The host resolver rule
# makes every name but 127.0.0.1 unresolvable, so not even a DNS lookup (link preconnect,
# prefetch) leaves the machine.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}",
)


def find_chromium() -> Path:
    """The Chromium to use: $NEWSLETTER_CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH.

    Calls pytest.fail (never skip) when there is none.
    """
    override = os.environ.get("NEWSLETTER_CHROMIUM")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(
                f"NEWSLETTER_CHROMIUM={override} is not an executable file; unset it or {INSTALL_HINT}",
                pytrace=False,
            )
        return path
    if DEFAULT_CHROMIUM.is_file() and os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    found = shutil.which("chromium")
    if found:
        return Path(found)
    pytest.fail(
        f"Chromium not found ({DEFAULT_CHROMIUM} missing, no `chromium` on PATH): {INSTALL_HINT}",
        pytrace=False,
    )


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL
    ("http://127.0.0.1:PORT/") and shuts the server down afterwards."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class BrowserPage:
    """A Chromium tab that can only reach 127.0.0.1, and where its screenshots go."""

    page: Page
    shots: Path  # under the test's tmp_path
    blocked: list[str] = field(default_factory=list)  # URLs of aborted (non-loopback) requests

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """A PNG of the page in the tmp folder, copied to $NEWSLETTER_ARTIFACTS when set."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        artifacts = os.environ.get("NEWSLETTER_ARTIFACTS")
        if artifacts:
            target = Path(artifacts)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        return path

    def _route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    return find_chromium()


@pytest.fixture(scope="session")
def chromium_context(
    chromium_executable: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    """One headless Chromium with a fresh, empty profile for the session."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(chromium_executable),
                headless=True,
                args=list(CHROMIUM_FLAGS),
            )
        except PlaywrightError as exc:
            pytest.fail(
                f"could not start {chromium_executable}: {exc}\n{INSTALL_HINT}", pytrace=False
            )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def browser_page(chromium_context: BrowserContext, tmp_path: Path) -> Iterator[BrowserPage]:
    """A new tab; requests to anything but 127.0.0.1 are aborted and listed in `.blocked`."""
    page = chromium_context.new_page()
    tab = BrowserPage(page=page, shots=tmp_path / "screenshots")
    page.route("**/*", tab._route)
    try:
        yield tab
    finally:
        page.close()
