"""The HTML site in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium, on the site of a smoke leaderboard made by the real
runner. Loads from file:// without console errors, a table re-sorts when its header is
clicked, Fig. 3 shows one point per measured row with its tooltip, every link resolves, the
screenshot is not blank. Skips, saying why, where Chromium, its driver or Selenium is absent
(.ci/run installs them)."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1300,1000")

pytestmark = pytest.mark.skipif(not (BROWSER and DRIVER),
                                reason="needs Chromium and its driver (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def smoke_site(tmp_path_factory, demo_root):
    """A smoke leaderboard of the tiny models (real runs on the demo data) and its site."""
    import tiny_plugin
    from membench import plugins, registry
    from membench.cli import main

    board = tmp_path_factory.mktemp("browser") / "board"
    pm = plugins.load()
    pm.register(tiny_plugin, name="tests.tiny_plugin")
    registry.clear_cache()
    try:
        assert main(["run", "--model", "tiny-cnn,tiny-chain", "--data", str(demo_root), "--dataset", "demo",
                     "--splits", "1,2", "--preset", "smoke", "--out", str(board)]) == 0
        assert main(["report", "--leaderboard", str(board), "--n-boot", "50"]) == 0
    finally:
        pm.unregister(tiny_plugin)
        registry.clear_cache()
    return board


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'membench[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="membench-chromium-")
    options.add_argument(f"--user-data-dir={profile}")  # a new, empty profile
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def load(driver, path: Path) -> list[dict]:
    """Open a page from file://; returns the console entries it logged."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return driver.get_log("browser")


def test_index_loads_without_errors_and_table_resorts(smoke_site, browser):
    from selenium.webdriver.common.by import By

    logged = load(browser, smoke_site / "index.html")
    assert [e for e in logged if e["level"] in ("SEVERE", "WARNING")] == []
    table = browser.find_element(By.ID, "table2-demo")

    def column(index: int) -> list[str]:
        return [row.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-sort")
                for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    before = column(0)
    rho_button = table.find_elements(By.CSS_SELECTOR, "thead th button")[1]  # "ρ ↑ measured"
    rho_button.click()
    values = column(1)
    measured = [float(v) for v in values if v]
    assert len(measured) == 2 and measured == sorted(measured) and values[len(measured):] == [""] * (
        len(values) - len(measured))  # numbers ascending, rows without a measurement last
    assert table.find_elements(By.CSS_SELECTOR, "thead th")[1].get_attribute("aria-sort") == "ascending"
    rho_button.click()
    again = [float(v) for v in column(1) if v]
    assert again == sorted(measured, reverse=True)
    assert column(0) != before  # the rows moved, not only the arrow
    label_button = table.find_elements(By.CSS_SELECTOR, "thead th button")[0]
    label_button.click()
    assert column(0) == sorted(before, key=str)


def test_fig3_has_one_point_per_measured_row_with_its_tooltip(smoke_site, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    load(browser, smoke_site / "index.html")
    with open(smoke_site / "table2_demo.csv", newline="") as f:
        measured = [r for r in csv.DictReader(f) if r["rho_mean"] and r["params_total"]]
    points = browser.find_elements(By.CSS_SELECTOR, '#fig3-demo g[data-metric="rho"] circle.measured')
    assert len(points) == len(measured) == 2
    tip = browser.find_element(By.ID, "tip")
    assert not tip.is_displayed()
    for point in points:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", point)
        ActionChains(browser).move_to_element(point).perform()
        assert tip.is_displayed()
        text = tip.text
        row = next(r for r in measured if f"ρ = {float(r['rho_mean']):.3f}" in text)
        assert text.splitlines()[0].startswith(row["model"]) and f"splits: {row['n_splits']}" in text
        assert f"configuration: {row['configuration'] or 'protocol'} ({row['config_id']})" in text
        assert f"95% CI [{float(row['rho_ci_low']):.3f}, {float(row['rho_ci_high']):.3f}]" in text
    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()
    assert not tip.is_displayed()


def test_every_link_resolves_and_run_pages_load(smoke_site, browser):
    from selenium.webdriver.common.by import By

    pages, seen = [smoke_site / "index.html"], set()
    while pages:
        page = pages.pop()
        if page in seen:
            continue
        seen.add(page)
        logged = load(browser, page)
        assert [e for e in logged if e["level"] == "SEVERE"] == [], page.name
        for link in browser.find_elements(By.CSS_SELECTOR, "a[href]"):
            url = urlparse(link.get_property("href"))
            assert url.scheme == "file", f"{page.name}: {url.geturl()} (pages fetch nothing from a network)"
            target = Path(unquote(url.path))
            assert target.is_file(), f"{page.name}: {url.geturl()}"
            if url.fragment:
                assert target != page or browser.find_elements(By.ID, url.fragment), url.geturl()
            if target.suffix == ".html":
                pages.append(target)
    assert len([p for p in seen if p.parent.name == "site"]) == 2  # one page per run (tiny-cnn, tiny-chain)


def test_screenshot_is_not_blank(smoke_site, browser):
    from PIL import Image, ImageStat

    load(browser, smoke_site / "index.html")
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
    assert image.size[0] >= 1000
    stat = ImageStat.Stat(image)
    assert stat.stddev[0] > 10 and len(image.getcolors(256 * 256) or []) > 20  # text, tables and a chart drawn
