"""report.html in a real browser: Debian's Chromium, headless, driven by Selenium through the
chromedriver beside it (no browser is downloaded at test time). Skips, saying why, where either is
missing; .ci/run installs both."""

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stnexp.cli import app

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install 'stnexp[test]')"
    )
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no Chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,4000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_html_opens_in_chromium_with_every_picture_loaded_and_no_console_error(tiny_run, tmp_path, browser):
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["report", str(tiny_run), "--paper", "--html", "--out", str(out)])
    assert r.exit_code == 0, r.output
    browser.get((out / "report.html").as_uri())
    widths = browser.execute_script("return [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    # the Table-1 figure, then the run's curves, error by distortion, rectification and transformer pictures
    assert len(widths) == 5 and all(w > 0 for w in widths), widths
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    heading = browser.find_element("tag name", "h1").text
    assert heading.startswith("stnexp report") and tiny_run.name in heading
    assert "command" in browser.find_element("tag name", "ul").text  # what was run, with which versions, where
    assert len(browser.find_elements("tag name", "table")) >= 3  # the paper table, the analysis tables
    shot = Path(os.environ.get("STNEXP_SCREENSHOTS", tmp_path)) / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
