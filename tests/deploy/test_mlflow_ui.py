"""Watch a sweep in the MLflow UI: headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium) against the basic-auth server of the restarted-server sweep.

The test opens the sweep's experiment, adds the `optim.lr`, `train.batch_size`, `train/loss`
and `final/eval_loss` columns through the UI's own column picker, expands the parent run,
and checks that every child run is a row showing its LR and loss as MLflow stores them. It
saves a screenshot (`PROXYSWEEP_SCREENSHOT=docs/mlflow_ui.png` also writes it there: the one in
the README).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.deploy.services import missing, wait_until

pytestmark = [pytest.mark.slow]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
COLUMNS = ("optim.lr", "train.batch_size", "train/loss", "final/eval_loss")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,640")


@pytest.fixture
def browser(sweep_on_server):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing("Chromium not found: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # Basic auth as a header on every request the page makes (credentials in the URL are
    # not sent by the UI's own fetches).
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {
        "headers": {"Authorization": sweep_on_server["server"].auth_header}})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _find(driver, xpath: str, *, timeout_s: float = 30):
    from selenium.webdriver.common.by import By

    found = []
    wait_until(lambda: found.extend(driver.find_elements(By.XPATH, xpath)) or found,
               timeout_s=timeout_s, what=f"the element {xpath}")
    return found[0]


def _cells(driver, column: str) -> dict[str, str]:
    """run id → the text of its cell in `column` (ag-grid keys rows by run id)."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.XPATH, f"//*[@role='gridcell'][@col-id=\"{column}\"]")
    return {c.find_element(By.XPATH, "./ancestor::*[@role='row'][1]").get_attribute("row-id"):
            c.text for c in cells}


def _show_columns(driver, names) -> None:
    """Toggle columns through the UI's column picker (search, then tick the match)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    tree = "//*[@data-testid='column-selector-tree']"
    _find(driver, "//button[normalize-space()='Columns']").click()
    for name in names:
        box = _find(driver, "//input[@placeholder='Search columns']")  # re-rendered each time
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(name)
        match = (f"{tree}//div[contains(@class,'tree-treenode')][.//span[contains(@class,"
                 f"'tree-title')][normalize-space()='{name}']]//span[contains(@class,"
                 "'tree-checkbox')]")

        def tick(match=match) -> bool:
            try:
                for node in driver.find_elements(By.XPATH, match):
                    if node.is_displayed():
                        node.click()
                        return True
                # The filtered group may be folded: unfold it and look again.
                for group in driver.find_elements(
                        By.XPATH, f"{tree}//span[contains(@class,'tree-switcher_close')]"):
                    if group.is_displayed():
                        group.click()
            except StaleElementReferenceException:  # the picker re-rendered under us
                pass
            return False

        wait_until(tick, timeout_s=20, interval_s=0.5, what=f"column {name} in the picker")
    _find(driver, "//input[@placeholder='Search columns']").send_keys(Keys.ESCAPE)


def test_sweep_children_with_lr_and_loss_columns_in_the_mlflow_ui(sweep_on_server, browser,
                                                                   tmp_path):
    from selenium.webdriver.common.by import By

    server, client, exp = (sweep_on_server[k] for k in ("server", "client", "experiment"))
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags["proxysweep.kind"] == "sweep"]
    children = [r for r in runs if r.data.tags["proxysweep.kind"] == "trial"]
    browser.get(f"{server.url}/#/experiments/{exp.experiment_id}/runs")
    _find(browser, f"//a[normalize-space()='{parent.info.run_name}']")
    for assistant in browser.find_elements(By.XPATH, "//button[@aria-label='Close']"):
        assistant.click()  # the assistant panel takes a third of the page
    _show_columns(browser, ["Dataset", "Source", "Models", *COLUMNS])  # off, then on
    _find(browser, f"//a[normalize-space()='{parent.info.run_name}']/ancestor::*[@role="
          "'gridcell'][1]//button").click()  # expand the sweep into its trials
    wait_until(lambda: len(_cells(browser, "attributes.`Run Name`")) == 1 + len(children),
               timeout_s=30, what="the child runs")

    names = _cells(browser, "attributes.`Run Name`")
    lrs, batches = (_cells(browser, f"params.`{k}`") for k in ("optim.lr", "train.batch_size"))
    losses, evals = (_cells(browser, f"metrics.`{k}`") for k in ("train/loss", "final/eval_loss"))
    for child in children:
        run_id = child.info.run_id
        assert child.info.run_name in names[run_id]
        assert lrs[run_id] == child.data.params["optim.lr"]
        assert batches[run_id] == child.data.params["train.batch_size"]
        assert float(losses[run_id]) == pytest.approx(child.data.metrics["train/loss"])
        assert float(evals[run_id]) == pytest.approx(child.data.metrics["final/eval_loss"])

    time.sleep(0.5)  # let the expanded rows finish painting
    shot = tmp_path / "mlflow_ui.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("PROXYSWEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["PROXYSWEEP_SCREENSHOT"])
