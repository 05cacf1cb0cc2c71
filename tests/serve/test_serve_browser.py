"""`ukehi-jepsen serve` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which scripts/setup installs) driven by Selenium, against the store of
tests/serve/serve_fixtures.py. Skipped, saying why, only where Chromium is not installed."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no headless Chromium here: install Debian's chromium and chromium-driver "
                "(scripts/setup does, as root) to run the browser tests", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    # headless Chromium saves downloads only where it is told to
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()


def click_and_load(browser, element) -> None:
    """Click something that loads a page, and wait until the new page has replaced the old."""
    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(EC.staleness_of(old))


def rows(browser) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr.run")


def test_list_loads_and_filters(browser, server, store):
    _, ids = store
    browser.get(server + "/")
    assert browser.title.startswith("Runs")
    states = [r.get_attribute("data-verdict") for r in rows(browser)]
    assert len(states) == 9
    assert set(states) == {"valid", "invalid", "unknown", "running", "incomplete", "crashed"}
    colors = {r.get_attribute("data-verdict"): r.find_element(By.CSS_SELECTOR, ".verdict").value_of_css_property(
        "background-color") for r in rows(browser)}
    assert len({colors["valid"], colors["invalid"], colors["unknown"], colors["running"]}) == 4, colors

    Select(browser.find_element(By.NAME, "verdict")).select_by_visible_text("invalid")
    click_and_load(browser, browser.find_element(By.ID, "apply"))
    shown = rows(browser)
    assert len(shown) == 2 and all(r.get_attribute("data-verdict") == "invalid" for r in shown)
    assert "verdict=invalid" in browser.current_url

    browser.get(server + "/")
    Select(browser.find_element(By.NAME, "workload")).select_by_visible_text("kv")
    click_and_load(browser, browser.find_element(By.ID, "apply"))
    shown = rows(browser)
    assert len(shown) == 1 and "running" == shown[0].get_attribute("data-verdict")
    assert "elapsed" in shown[0].text  # live progress of the run in progress

    browser.get(server + "/")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("series")
    click_and_load(browser, browser.find_element(By.ID, "apply"))
    assert len(rows(browser)) == 3


def test_run_page_shows_its_plots(browser, server, store):
    _, ids = store
    browser.get(f"{server}/run/{ids['invalid']}/")
    plots = browser.find_elements(By.CSS_SELECTOR, "img.plot")
    assert {p.get_attribute("alt") for p in plots} >= {"latency.png", "rate.png", "latency-quantiles.png"}
    for img in plots:  # each one loaded and decoded
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
    table = browser.find_element(By.ID, "checkers").text
    assert "linearizable" in table and "not linearizable" in table
    click_and_load(browser, browser.find_element(By.LINK_TEXT, "counterexample page"))
    assert "NOT linearizable" in browser.find_element(By.TAG_NAME, "h1").text
    browser.back()
    click_and_load(browser, browser.find_element(By.LINK_TEXT, "timeline.html"))
    assert browser.current_url.endswith("/file/timeline.html")
    browser.back()
    click_and_load(browser, browser.find_element(By.LINK_TEXT, "History"))
    Select(browser.find_element(By.NAME, "process")).select_by_visible_text("nemesis")
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, "#history-filters button"))
    ops = browser.find_elements(By.CSS_SELECTOR, "#history tr.op")
    assert len(ops) == 4 and all("partition" in o.text for o in ops)


def test_zip_downloads_and_unpacks(browser, server, store, downloads: Path, tmp_path: Path):
    _, ids = store
    browser.get(f"{server}/run/{ids['valid']}/")
    browser.find_element(By.ID, "zip").click()  # a download: the page stays
    name = ids["valid"].replace("/", "-") + ".zip"
    target = downloads / name
    deadline = time.monotonic() + 60
    while not target.exists() or list(downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"no {name} in {list(downloads.iterdir())}"
        time.sleep(0.2)
    with zipfile.ZipFile(target) as zf:
        assert zf.testzip() is None
        zf.extractall(tmp_path)
    top = tmp_path / ids["valid"].replace("/", "-")
    assert (top / "history.jsonl").is_file() and (top / "results.json").is_file()
    assert (top / "latency.png").read_bytes().startswith(b"\x89PNG")
    assert not (top / "leak.txt").exists() and not (top / ".hidden").exists()


def test_compare_page_renders(browser, server, store):
    _, ids = store
    browser.get(server + "/")
    for run_id in (ids["valid"], ids["invalid"]):
        browser.find_element(By.CSS_SELECTOR, f'input[name="run"][value="{run_id}"]').click()
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, "#compare-form button"))
    assert "/compare?" in browser.current_url
    head = browser.find_element(By.ID, "compare").text
    assert ids["valid"] in head and ids["invalid"] in head
    quantiles = browser.find_element(By.ID, "quantiles").text
    assert "read" in quantiles and "write" in quantiles
    differing = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#spec tr.diff")]
    assert any(r.startswith("nemeses") for r in differing) and any(r.startswith("name") for r in differing)


def test_group_pages(browser, server, store):
    _, ids = store
    browser.get(server + "/groups")
    kinds = {g.get_attribute("data-kind") for g in browser.find_elements(By.CSS_SELECTOR, "#groups tr.group")}
    assert kinds == {"test-count", "matrix", "regress"}
    browser.get(f"{server}/group/{ids['test-count']}")
    assert browser.find_element(By.ID, "flake-rate").text == "1/3 (33%)"
    browser.get(f"{server}/group/{ids['matrix']}")
    assert "invalid (1 of 2)" in browser.find_element(By.ID, "matrix").text
    browser.get(f"{server}/group/{ids['regress']}")
    assert "stale-read" in browser.find_element(By.ID, "regress").text


@pytest.mark.parametrize("path", [
    "/run/register-partition/20260101T100000.000Z/file/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/run/register-partition/20260101T100000.000Z/file/..%2f..%2f..%2fetc%2fpasswd",
    "/run/register-partition/20260101T100000.000Z/file/leak.txt",
    "/run/register-partition/20260101T100000.000Z/file/leakdir/secret.txt",
    "/run/register-partition/20260101T100000.000Z/file/.hidden",
    "/run/register-partition/20991231T000000.000Z/",
    "/zip/outside-test/x",
])
def test_traversal_attempts_get_404(browser, server, path):
    browser.get(server + path)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    assert "SECRET" not in browser.page_source and "root:" not in browser.page_source


def test_timeline_heads_stay_over_their_columns_when_processes_outgrow_the_window(browser, tmp_path: Path):
    """30 processes are 3,600 px of columns in a 1,280 px window: each column's head must
    still sit over it (a flex row shrank the heads to the window, so from the second column
    on every head named another column's process)."""
    from checkers.history import Op
    from harness.report.timeline import COLUMN_PX, render_timeline

    ms = 1_000_000
    ops = []
    for p in range(30):
        node = {"node": f"n{p % 3 + 1}"}
        ops += [Op(len(ops), p * 10 * ms, p, "invoke", "write", key=p % 3, value=p, extra=node),
                Op(len(ops) + 1, (p * 10 + 5) * ms, p, "ok", "write", key=p % 3, value=p)]
    page = render_timeline(ops, tmp_path / "timeline.html")
    browser.get(page.as_uri())
    heads = browser.find_elements(By.CSS_SELECTOR, ".head")
    cols = browser.find_elements(By.CSS_SELECTOR, ".col")
    assert len(heads) == len(cols) == 30
    for head, col in zip(heads, cols):
        h, c = head.rect, col.rect
        assert abs(h["x"] - c["x"]) <= 1 and abs(h["width"] - COLUMN_PX) <= 1, (head.text, h, c)
    # the last head is readable after scrolling right, on the sticky row's white background
    last = heads[-1]
    browser.execute_script("arguments[0].scrollIntoView({inline: 'end'})", last)
    assert last.text.startswith("29")
    row = browser.find_element(By.CSS_SELECTOR, ".heads")
    assert row.rect["x"] + row.rect["width"] >= last.rect["x"] + last.rect["width"]


def test_checker_explanations_wrap_inside_the_page(browser, server, store):
    """A counterexample's long lines wrap in their cell: unwrapped, a <pre> in the checkers
    table widened it past the window and pushed the seconds column off screen (seen on a real
    stale-read run at 1,280 px)."""
    _, ids = store
    browser.set_window_size(900, 900)
    try:
        browser.get(f"{server}/run/{ids['invalid']}/")
        shown = [p for p in browser.find_elements(By.CSS_SELECTOR, "#checkers pre") if p.is_displayed()]
        assert len(shown) == 1 and "last linearized" in shown[0].text
        pre = shown[0]
        fits = browser.execute_script(
            "const t = document.getElementById('checkers').getBoundingClientRect();"
            "return [t.right, document.documentElement.clientWidth];")
        assert fits[0] <= fits[1], f"the checkers table ends at {fits[0]} px in a {fits[1]} px page"
        # wrapped, not cut: the whole explanation is still there
        assert "could not linearize" in pre.text
    finally:
        browser.set_window_size(1280, 900)
