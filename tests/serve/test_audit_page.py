"""The audit log through the service: /predictions shows file names only behind the token and carries the
chain, `ultrasonic audit verify` passes the log a real server wrote, every file the service writes is 0600,
and /audit shows a hostile file name as text in headless Chromium (no script or image runs from it)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from live_server import LiveServer

httpx = pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")

pytestmark = [pytest.mark.e2e, pytest.mark.once]

HOSTILE = "<img src=x onerror=alert(1)>.png"
TOKEN = "audit-s3cret"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _image(tiny_run: Path) -> bytes:
    return sorted((tiny_run.parent / "data" / "pneumonia").glob("*.png"))[0].read_bytes()


def _post(url: str, name: str, data: bytes, **kwargs) -> httpx.Response:
    return httpx.post(url + "/predict", files={"file": (name, data)}, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit_service")


def test_without_a_token_no_file_name_leaves_the_service_and_the_log_verifies(tiny_run, folder):
    db = folder / "open.sqlite"
    server = LiveServer(tiny_run, folder / "open.log", "--db", str(db))
    try:
        sent = _post(server.url, "Doe_Jane_MRN001.png", _image(tiny_run))
        assert sent.status_code == 200 and sent.json()["file"] == "Doe_Jane_MRN001.png"  # the sender's own
        rows = httpx.get(server.url + "/predictions").json()
        assert rows and all(row["file"] is None for row in rows)
        assert rows[0]["prev_hash"] == "0" * 64 and len(rows[0]["hash"]) == 64
        assert "Doe_Jane" not in httpx.get(server.url + "/predictions").text
        for path in sorted(folder.glob("open.sqlite*")):  # the log, its -wal and -shm, while the server runs
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        page = httpx.get(server.url + "/audit")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Doe_Jane" not in page.text  # the page holds no data; it reads /predictions
    finally:
        server.stop()
    done = subprocess.run([sys.executable, "-m", "ultrasonic.cli", "audit", "verify", str(db), "--head",
                           rows[0]["hash"]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"OK: {db}: 1 rows, hash chain intact"), done


@pytest.fixture(scope="module")
def guarded(tiny_run, folder):
    server = LiveServer(tiny_run, folder / "guarded.log", "--db", str(folder / "guarded.sqlite"), "--token", TOKEN)
    yield server
    server.stop()


def test_behind_the_token_the_names_and_the_chain_are_served(guarded, tiny_run):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ids = [_post(guarded.url, name, _image(tiny_run), headers=auth).json()["id"] for name in ("a.png", HOSTILE)]
    assert httpx.get(guarded.url + "/predictions").status_code == 401
    rows = httpx.get(guarded.url + "/predictions", headers=auth).json()
    assert [r["id"] for r in rows[:2]] == ids[::-1] and [r["file"] for r in rows[:2]] == [HOSTILE, "a.png"]
    assert rows[0]["prev_hash"] == rows[1]["hash"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install the Debian package chromium")
def test_the_audit_page_shows_a_hostile_name_as_text_behind_the_token(guarded, tiny_run):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _post(guarded.url, HOSTILE, _image(tiny_run), headers=auth).status_code == 200
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(guarded.url + "/audit")
            page.wait_for_selector("#token-row:not([hidden])")  # 401 from /predictions: it asks for the token
            assert page.locator("#rows tr").count() == 0
            page.fill("#token", TOKEN)
            page.click("#token-save")
            page.wait_for_selector("#rows tr")
            first = page.locator("#rows tr").first
            assert first.locator("td.file").inner_text() == HOSTILE  # shown as the text it is
            assert page.locator("#rows img").count() == 0 and dialogs == []
            cells = first.locator("td").all_inner_texts()
            assert cells[3] in ("normal", "pneumonia", "no class") and "%" in cells[4]
            assert len(cells[7]) == 12 and cells[7] in httpx.get(guarded.url + "/predictions", headers=auth).text
            page.screenshot(path=str(Path(guarded.log_path).parent / "audit_page.png"), full_page=True)
        finally:
            browser.close()
