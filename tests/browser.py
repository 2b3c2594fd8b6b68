"""A real headless Chromium for the browser tests: Debian's `chromium`, driven by Playwright.

Playwright's own browser download (`playwright install`) is never used: the tests run the
system's `/usr/bin/chromium` (scripts/setup.sh installs it as root; `MULTI2CAP_CHROMIUM` names
another). Without it, or without the `playwright` package, the tests that ask for a browser are
skipped, saying why. `headless_chromium()` is a context manager; `browser` a module-scoped
fixture on top of it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("MULTI2CAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
FAKE_MICROPHONE_ARGS = (
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beeping tone)
    "--use-fake-ui-for-media-stream",  # grant getUserMedia without a prompt
)


def browser_missing_reason() -> str | None:
    """Why no browser test can run here, or None when one can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (`pip install playwright`, part of the dev extras)"
    if not os.path.isfile(CHROMIUM):
        return f"{CHROMIUM} not found: `apt-get install chromium` (scripts/setup.sh does, as root)"
    return None


@contextmanager
def headless_chromium(extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """A playwright `Browser` on the system Chromium, closed on exit; skips when unavailable.
    `extra_args` are added to `CHROMIUM_ARGS` (e.g. `FAKE_MICROPHONE_ARGS`)."""
    reason = browser_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module (import this fixture into the module or a conftest)."""
    with headless_chromium() as launched:
        yield launched
