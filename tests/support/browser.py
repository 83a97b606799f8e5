"""Headless Chromium for end-to-end tests, driven by Playwright.

The browser is the distribution's Chromium (Debian: ``apt-get install -y chromium``), never one that
``playwright install`` downloads: that needs the network, which test machines may not have. Override
the binary with ``CRDTMEM_CHROMIUM=/path/to/chromium``. A missing browser or Playwright package is a
test failure with the install command, not a skip: a skipped end-to-end test looks like a pass.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError as exc:  # a clear failure at collection, not a skip
    raise ImportError(
        "the Python package playwright is missing: `pip install -e '.[test]'` (or `pip install "
        "playwright`). It drives the system Chromium; do not run `playwright install`."
    ) from exc

__all__ = ["CHROMIUM", "Chromium", "Tab", "chromium", "chromium_path", "expect"]

EXPECT_MS = 15_000
"""How long an ``expect`` without a timeout of its own waits for the page (Playwright's default, 5 s,
is short for a page that renders events from two server processes on a loaded machine)."""
expect.set_options(timeout=EXPECT_MS)

CHROMIUM = os.environ.get("CRDTMEM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The Chromium binary, or AssertionError saying how to install it."""
    found = shutil.which(CHROMIUM)
    if found is None:
        raise AssertionError(
            f"Chromium not found at {CHROMIUM}: the dashboard tests need a real browser. Install it with "
            "`apt-get install -y chromium` (Debian) or point CRDTMEM_CHROMIUM at a Chromium binary. "
            "Do not run `playwright install`."
        )
    return found


@dataclass
class Tab:
    """A page plus the uncaught JavaScript errors it raised (tests assert there were none)."""

    page: Page
    errors: list[str] = field(default_factory=list)


@dataclass
class Chromium:
    browser: Browser
    tabs: list[Tab] = field(default_factory=list)

    async def open(self, url: str) -> Tab:
        """A new tab (own cookies and storage) showing ``url`` once its scripts have run."""
        context = await self.browser.new_context(viewport={"width": 1360, "height": 900})
        tab = Tab(await context.new_page())
        tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
        self.tabs.append(tab)
        await tab.page.goto(url, wait_until="domcontentloaded")
        return tab

    def js_errors(self) -> list[str]:
        return [error for tab in self.tabs for error in tab.errors]


@asynccontextmanager
async def chromium() -> AsyncIterator[Chromium]:
    """A headless Chromium for the duration of the block."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield Chromium(browser)
        finally:
            await browser.close()
