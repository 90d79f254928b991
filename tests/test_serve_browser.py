"""The serve page in a real browser: headless Chromium loads it, samples, and the pictures appear.

Skips (with the reason) where gradio, selenium, chromium or chromedriver is missing; .ci/run installs them.
Set IMAGEFOLDER_SERVE_SCREENSHOTS=DIR to keep the screenshots (the README's docs/serve-*.png are made this way).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from imagefolder.demo.assets import DEFAULT_ASSETS

gradio = pytest.importorskip("gradio", reason='gradio is not installed (pip install -e ".[serve]")')
webdriver = pytest.importorskip("selenium.webdriver", reason='selenium is not installed (pip install -e ".[dev]")')

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.common.exceptions import ElementClickInterceptedException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from imagefolder.serve.app import build_app, launch  # noqa: E402
from imagefolder.serve.logic import load_served_model  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url():
    app = build_app(load_served_model(None))
    port = _free_port()
    launch(app, port=port, block=False)  # as 'imagefolder serve' does, returning once it listens
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def _click(wait: WebDriverWait, find) -> None:
    """Click the element ``find(driver)`` returns once nothing covers it (gradio lays a status overlay over
    components while the page's first events run)."""
    def attempt(driver) -> bool:
        try:
            find(driver).click()
            return True
        except (ElementClickInterceptedException, IndexError):  # covered, or not there yet
            return False
    wait.until(attempt)


def _loaded_images(driver, elem_id: str) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length",
        f"#{elem_id} img")


def test_the_page_samples_and_shows_the_pictures(page_url, browser, tmp_path):
    browser.get(page_url)
    wait = WebDriverWait(browser, 60)  # generous: a loaded machine; normally seconds
    wait.until(lambda d: d.find_element(By.ID, "sample-button"))
    shown = browser.execute_script("return [...document.querySelectorAll('input')].map(i => i.value)")
    assert "0: circle" in shown  # the class picker shows the demo model's class names
    assert _loaded_images(browser, "samples") == 0
    _click(wait, lambda d: d.find_element(By.ID, "sample-button"))
    tokenizer = json.loads((DEFAULT_ASSETS / "generator" / "tokenizer" / "config.json").read_text())
    scales = len(tokenizer["config"]["v_patch_nums"])
    wait.until(lambda d: _loaded_images(d, "samples") >= 8 and _loaded_images(d, "progression") >= scales)
    assert _loaded_images(browser, "progression") == scales  # one picture per scale of the demo model
    _screenshot(browser, tmp_path / "serve-sample.png")


def test_the_page_edits_a_picked_picture_where_it_is_painted(page_url, browser, tmp_path):
    browser.get(page_url)
    wait = WebDriverWait(browser, 60)  # generous: a loaded machine; normally seconds
    _click(wait, lambda d: d.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Edit']"))
    _click(wait, lambda d: d.find_elements(By.CSS_SELECTOR, "#edit-examples img")[1])
    wait.until(lambda d: re.search(r"\d+%", d.find_element(By.ID, "editor").text))  # the zoom: a picture is in
    canvas = browser.find_elements(By.CSS_SELECTOR, "#editor canvas")[-1]
    ActionChains(browser).move_to_element_with_offset(canvas, -40, -40).click_and_hold().move_by_offset(60, 0) \
        .move_by_offset(0, 60).move_by_offset(-60, 0).move_by_offset(0, -60).release().perform()
    _click(wait, lambda d: d.find_element(By.ID, "edit-button"))
    wait.until(lambda d: _loaded_images(d, "edits") >= 7)  # picture, reconstruction, kept region, 4 edits
    assert "nothing painted" not in browser.find_element(By.TAG_NAME, "body").text  # the stroke reached the model
    _screenshot(browser, tmp_path / "serve-edit.png")


def _screenshot(driver, path) -> None:
    driver.save_screenshot(str(path))
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert pixels.shape[0] > 500 and pixels.std() > 10  # not a blank page
    folder = os.environ.get("IMAGEFOLDER_SERVE_SCREENSHOTS")
    if folder:
        shutil.copy(path, os.path.join(folder, path.name))
