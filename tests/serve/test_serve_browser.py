"""The web page end to end: headless Chromium (the system's, driven by Playwright) opens `ultrasonic serve`,
uploads a real chest X-ray, and must show the class, the probability bars and the heat map."""

from __future__ import annotations

from pathlib import Path

import pytest

from live_server import LiveServer
from shared_data import SHARED_DATA

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
XRAYS = SHARED_DATA / "chest_xray_224" / "train" / "PNEUMONIA"

# Checked before any fixture runs, so a machine without a browser does not train the run for nothing.
pytestmark = [
    pytest.mark.once,
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install the Debian packages "
                       "chromium and chromium-driver (.ci/run does this)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def xray() -> Path:
    found = sorted(XRAYS.glob("*.jpeg")) if XRAYS.is_dir() else []
    if not found:
        pytest.skip(f"no chest X-ray JPEGs in {XRAYS} (the shared data folder is not mounted)")
    return found[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser, tiny_run):
    root = tmp_path_factory.mktemp("browser")
    # --ood warn: the tiny run learnt synthetic images, so its gate rightly refuses a real X-ray a class
    live = LiveServer(tiny_run, root / "server.log", "--db", str(root / "audit.sqlite"), "--ood", "warn")
    yield live
    live.stop()


def test_page_shows_class_bars_and_heat_map_for_a_real_xray(browser, server, xray, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('model ')")
    page.set_input_files("#file-input", str(xray))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function("document.getElementById('cam-image').complete"
                           " && document.getElementById('cam-image').naturalWidth > 0")

    assert page.text_content("#result-class") in ("normal", "pneumonia")
    bars = page.locator(".bar-row")
    assert bars.count() == 2
    widths = [float(bars.nth(k).locator(".bar-fill").evaluate("e => parseFloat(e.style.width)")) for k in range(2)]
    assert sum(widths) == pytest.approx(100, abs=0.2) and all(w >= 0 for w in widths)
    assert page.locator(".bar-row.chosen").get_attribute("data-class") == page.text_content("#result-class")
    assert page.evaluate("document.getElementById('original-image').naturalWidth") > 0  # a JPEG shows itself
    assert page.is_visible("#cam-image") and page.is_hidden("#error")
    assert xray.name in page.text_content("#details")
    assert not errors, errors

    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_page_shows_the_reason_for_a_bad_file(browser, server, tmp_path):
    bad = tmp_path / "report.png"
    bad.write_text("this is a text file, not an image")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not a recognised image" in page.text_content("#error") and page.is_hidden("#result")
    page.close()
