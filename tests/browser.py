"""A real headless Chromium for the browser tests: Debian's `chromium`, driven by Playwright.

Playwright's own browser download (`playwright install`) is never used: the tests run the
system's `/usr/bin/chromium` (installed by scripts/setup.sh). Without it, or without the
`playwright` package, the tests that ask for a browser are skipped, saying why.
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


def browser_unavailable() -> str | None:
    """Why no browser test can run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return (
            "the playwright package is not installed (pip install playwright; no browser download)"
        )
    if not os.path.isfile(CHROMIUM):
        return f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh)"
    return None


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """A headless Chromium (`playwright.sync_api.Browser`), closed on exit; skips if absent."""
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module (import this fixture into the module or a conftest)."""
    with chromium_browser() as launched:
        yield launched
