"""The try-it page in headless Chromium (Debian's chromium and chromium-driver, driven by
selenium): the app on loopback, an image uploaded to a classification run, the predicted class
and the Grad-CAM overlay on the page, and a screenshot.

Skipped when Chromium or its driver is not installed (`make test-browser` installs them). The
screenshot goes to docs/img/serve.png when FOVEA_SCREENSHOT is set (to a path: there), else to
the test's temporary folder."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not "
                                "installed (make test-browser installs them with apt-get)")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(serve_runs):
    import uvicorn

    from fovea.serve import create_app

    runs_dir, made, data = serve_runs
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(runs_dir=runs_dir), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", made, data
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_shows_the_predicted_class_and_grad_cam(server, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from fovea.data.decode import load_image
    from fovea.tasks.classify import load_classifier

    url, made, data = server
    digit = sorted((data / "digits").glob("*.png"))[0]
    upload = tmp_path / "digit.png"  # shown larger in the page's preview; the model sees it at 8x8 again
    Image.open(digit).resize((128, 128), Image.Resampling.NEAREST).save(upload)
    model, info = load_classifier(made["classify"])
    want = info["classes"][int(model(load_image(upload, channels=1, size=(8, 8))[None].float() / 255).argmax())]

    browser.get(f"{url}/#/runs/classify")
    wait = WebDriverWait(browser, 30)
    wait.until(EC.visibility_of_element_located((By.ID, "try")))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#curves canvas"))  # curves drawn from metrics.csv
    browser.find_element(By.ID, "file").send_keys(str(upload))  # choosing a file runs the prediction
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#top li")))
    overlay = wait.until(EC.presence_of_element_located((By.ID, "gradcam")))
    wait.until(lambda d: d.execute_script("const i = document.getElementById('gradcam'); "
                                          "return i.complete && i.naturalWidth > 0"))
    first = browser.find_element(By.CSS_SELECTOR, "#top li .cls").text
    assert first == want
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return document.getElementById('gradcam').naturalWidth") == 256
    assert "Grad-CAM" in browser.find_element(By.ID, "result").text
    assert not browser.find_element(By.ID, "drop2").is_displayed()  # one upload for a classifier
    assert not browser.find_element(By.ID, "status").get_attribute("class")  # no error shown
    plots = browser.find_elements(By.CSS_SELECTOR, "#plots img")
    assert plots and all(browser.execute_script("return arguments[0].naturalWidth", p) > 0 for p in plots[:2])

    wanted = os.environ.get("FOVEA_SCREENSHOT")
    shot = (Path(wanted) if wanted.endswith(".png") else REPO / "docs" / "img" / "serve.png") if wanted \
        else tmp_path / "serve.png"
    browser.execute_script("window.scrollTo(0, 0)")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
