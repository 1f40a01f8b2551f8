"""The portal and the dashboard in a real headless Chromium, driven by selenium.

Sign up, register a package, send records with its key through the real
ingest API, open the dashboard, check what the charts drew (and that a small
group shows as "< 5"), and save a screenshot to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,2200",
)  # fmt: skip


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, css: str, timeout: float = 20) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def fill_form(driver: Any, fields: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    element = None
    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        element.clear()
        element.send_keys(value)
    assert element is not None
    element.find_element(By.XPATH, "./ancestor::form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def realistic_records(package: str, record_factory: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Two weeks of a small library: 8–14 people a day, two of them on macOS (a small group)."""
    rng = random.Random(4)
    now = datetime.now(timezone.utc)
    records = []
    places = [("DE", "Western Europe", "Europe/Berlin"), ("US", "Northern America", "America/New_York"),
              ("JP", "Eastern Asia", "Asia/Tokyo"), ("BR", "South America", "America/Sao_Paulo")]  # fmt: skip
    for days_ago in range(14, 0, -1):
        hour = (now - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:00:00Z")
        for person in range(rng.randint(8, 14)):
            version = "1.1.0" if person % 3 else "1.0.0"
            country, region, zone = places[person % len(places)]
            records.append(record_factory(
                package=package, uid=f"{person:032x}", hour=hour, version=version,
                python=rng.choice(["3.11.9", "3.12.4", "3.12.4", "3.13.0"]),
                exit_code=1 if rng.random() < (0.15 if version == "1.0.0" else 0.04) else 0,
                duration_ms=int(rng.lognormvariate(6, 0.6)), peak_rss_kib=int(rng.lognormvariate(10.5, 0.3)),
                country=country, region=region, timezone=zone,
                props={"command": rng.choice(["build", "build", "test", "serve"])},
            ))  # fmt: skip
        for person in range(2):  # two macOS users: fewer than k = 5, never shown as a number
            records.append(record_factory(
                package=package, uid=f"{1000 + person:032x}", hour=hour, version="1.1.0", os="darwin",
                arch="arm64", country="DE", region="Western Europe", timezone="Europe/Berlin",
                props={"command": "build"},
            ))  # fmt: skip
    return records


def test_sign_up_register_a_package_and_see_its_dashboard(
    browser: Any, server_factory: Any, sqlite_url: str, record_factory: Callable[..., dict[str, Any]]
) -> None:
    from selenium.webdriver.common.by import By

    base_url = server_factory(sqlite_url)

    browser.get(base_url + "/signup")
    fill_form(browser, {"email": "ada@example.org", "password": "analytical engine"})
    wait_for(browser, "input[name=name]")
    assert browser.find_element(By.ID, "nav-email").text == "ada@example.org"

    fill_form(browser, {"name": "acme-lib"})
    key = wait_for(browser, "#package-key").text
    assert len(key) == 32 and key[0].isalpha()

    records = realistic_records("acme-lib", record_factory)
    for start in range(0, len(records), 100):
        response = httpx.post(
            base_url + "/api/v1/records", json={"records": records[start : start + 100]},
            headers={"Authorization": f"Bearer {key}"}, timeout=30,
        )  # fmt: skip
        assert response.status_code == 202, response.text

    browser.find_element(By.LINK_TEXT, "Open the dashboard").click()
    wait_for(browser, "#dashboard[data-drawn=true]")

    assert browser.find_element(By.ID, "total-runs").text == f"{len(records):,}"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-runs svg rect.bar")) == 14
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-ids svg path.line")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-versions tbody tr")) == 2
    for chart in ("by_python", "by_os", "by_country", "by_region", "by_timezone"):
        assert browser.find_elements(By.CSS_SELECTOR, f'[data-list="{chart}"] li.row'), chart
    operating_systems = browser.find_elements(By.CSS_SELECTOR, '[data-list="by_os"] li.row')
    darwin = [row for row in operating_systems if row.find_element(By.CSS_SELECTOR, ".row-label").text == "darwin"]
    assert len(darwin) == 1
    assert darwin[0].find_element(By.CSS_SELECTOR, ".row-value .suppressed").text == "< 5"
    linux = [row for row in operating_systems if row.find_element(By.CSS_SELECTOR, ".row-label").text == "linux"]
    assert linux[0].find_element(By.CSS_SELECTOR, ".row-value").text.startswith(str(len(records) - 28))
    assert browser.find_elements(By.CSS_SELECTOR, '[data-property="command"] li.row')

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    # The version filter is a plain form: choosing a version narrows every number.
    from selenium.webdriver.support.ui import Select, WebDriverWait

    Select(browser.find_element(By.NAME, "version")).select_by_value("1.0.0")
    browser.find_element(By.CSS_SELECTOR, ".dash-filter button[type=submit]").click()
    # The same page again: wait for the new address first, else the old page's
    # drawn dashboard answers. (chromedriver's staleness check can itself fail
    # with "Node with given id does not belong to the document".)
    WebDriverWait(browser, 20).until(lambda driver: "version=1.0.0" in driver.current_url)
    wait_for(browser, "#dashboard[data-drawn=true]")
    expected = sum(1 for record in records if record["version"] == "1.0.0")
    assert browser.find_element(By.ID, "total-runs").text == f"{expected:,}"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-versions tbody tr")) == 1
