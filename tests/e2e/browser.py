"""Headless Chromium for the browser tests: Debian's chromium + chromedriver driven through selenium.

    from tests.e2e.browser import browser, save_screenshot  # noqa: F401  (browser is a fixture)

    def test_something(browser):
        browser.get(url)
        save_screenshot(browser, "something")   # -> tests/artifacts/something.png

Only the system binaries are used: the Service gets an explicit chromedriver path, which makes
selenium skip Selenium Manager entirely (no driver or browser downloads, no lookups); SE_OFFLINE and
SE_AVOID_BROWSER_DOWNLOAD are set as well in case anything reaches it anyway. Tests skip, with the
apt-get line to fix it, on machines without the two packages.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
MISSING = ("headless browser tests need Debian's chromium and chromium-driver: "
           "apt-get install chromium chromium-driver")

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--password-store=basic",
    "--disable-features=Translate,OptimizationHints,MediaRouter,PasswordLeakDetection", "--no-proxy-server",
]


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return MISSING
    return None


@contextmanager
def chromium(*, width: int = 1024, height: int = 800) -> Iterator["WebDriver"]:
    """A fresh headless Chromium (own temporary profile: no cookies carried between uses)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for name in ("SE_OFFLINE", "SE_AVOID_BROWSER_DOWNLOAD", "SE_AVOID_STATS"):
        os.environ.setdefault(name, "true")
    workdir = Path(tempfile.mkdtemp(prefix="chromium-"))
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "credentials_enable_service": False,
        "profile.password_manager_enabled": False,
        "profile.password_manager_leak_detection": False,
    })
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def browser() -> Iterator["WebDriver"]:
    """A headless Chromium WebDriver, one per test; skips where chromium is not installed."""
    if reason := missing_reason():
        pytest.skip(reason)
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[test]'")
    with chromium() as driver:
        yield driver


def save_screenshot(driver: "WebDriver", name: str) -> Path:
    """The whole page (not just the viewport) as tests/artifacts/<name>.png; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    try:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        })
        path.write_bytes(base64.b64decode(shot["data"]))
    except Exception:  # not a Chromium driver, or CDP refused: the viewport will do
        driver.save_screenshot(str(path))
    return path
