"""The dashboard as its users see it: headless Chromium driving `sweeps dashboard` on a study
the service produced. Debian's chromium and chromedriver are installed by `make test`; nothing is
downloaded at run time and Chromium's background networking is off."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from conftest import assert_real_image, free_port, get_json_when_up, run_sweeps

pytestmark = [pytest.mark.slow, pytest.mark.races]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
TRIALS, EPOCHS = 4, 6


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    assert not missing, f"{missing} not installed: `make test` installs chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard_url(tmp_path: Path, data_path: Path) -> Iterator[str]:
    """`sweeps dashboard` serving a finished study named `browsed`."""
    made = run_sweeps(
        "worker",
        *("--study", "browsed", "--data", str(data_path), "--trials", str(TRIALS)),
        *("--epochs", str(EPOCHS), "--pruner", "none", "--quiet"),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "dashboard", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        get_json_when_up(f"http://127.0.0.1:{port}/api/studies")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_text(driver: webdriver.Chrome, text: str) -> None:
    WebDriverWait(driver, 30).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), text)
    )


def test_dashboard_pages_show_study_trials_and_learning_curves(
    browser: webdriver.Chrome, dashboard_url: str, tmp_path: Path
) -> None:
    browser.get(f"{dashboard_url}/dashboard")
    _wait_for_text(browser, "browsed")
    study_link = browser.find_element(By.PARTIAL_LINK_TEXT, "browsed")
    study_link.click()
    WebDriverWait(browser, 30).until(expected_conditions.url_contains("/dashboard/studies/"))
    study_page = browser.current_url

    _wait_for_text(browser, "Intermediate values")
    for number in range(TRIALS):  # one learning curve per trial, named in the plot's legend
        _wait_for_text(browser, f"trial #{number}")
    curves = browser.find_element(
        By.XPATH,
        "//*[normalize-space(text())='Intermediate values']"
        "/ancestor::*[.//*[contains(@class, 'js-plotly-plot')]][1]",
    )
    browser.execute_script("arguments[0].scrollIntoView();", curves)  # so the screenshot shows it
    screenshot = tmp_path / "study-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert_real_image(screenshot)

    browser.get(f"{study_page.rstrip('/')}/trials")
    _wait_for_text(browser, f"{TRIALS} Trials")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert all(f"Trial {number}" in body for number in range(TRIALS))
    assert "Intermediate Values" in body
