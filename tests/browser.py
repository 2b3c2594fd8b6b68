"""Headless Chromium for tests of web pages: Debian's `chromium` driven by playwright.

Playwright's own browser download (`playwright install`) is never used: the browser is the
system's `/usr/bin/chromium` (scripts/setup.sh installs it as root). Tests call
`headless_chromium()`, which skips them with the reason when the browser or playwright is
missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def browser_missing_reason() -> str | None:
    """Why no browser test can run here, or None when one can."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found: `apt-get install chromium` (scripts/setup.sh does, as root)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (`pip install playwright`, part of the dev extras)"
    return None


FAKE_MICROPHONE_ARGS = (
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beeping tone)
    "--use-fake-ui-for-media-stream",  # grant getUserMedia without a prompt
)


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
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()
