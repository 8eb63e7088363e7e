"""The explorer page in a real browser: `imix serve` on a free port, driven by headless Chromium.

Run by scripts/test.sh (which installs Debian's chromium and chromium-driver when missing):
    IMIX_BIN=target/release/imix pytest crates/imix-serve/tests
Screenshots of each tab go to $IMIX_TEST_OUT (default target/test-output/explorer).
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = Path(os.environ.get("IMIX_TEST_OUT", ROOT / "target" / "test-output" / "explorer"))
A = "A warm, funny and moving film."
B = "The service was slow and the food was cold."


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("IMIX_BIN", str(ROOT / "target" / "release" / "imix"))
    p = subprocess.Popen(
        [binary, "serve", "--port", "0", "--rows", str(HERE / "rows.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline()  # printed once the models are loaded and the port is bound
    m = re.search(r"http://\S+/", line)
    if not m:
        p.kill()
        raise AssertionError(f"imix serve did not start: {line!r} {p.stderr.read()}")
    yield m.group(0)
    p.send_signal(2)  # Ctrl-C: a clean stop
    assert p.wait(timeout=30) == 0, p.stderr.read()


@pytest.fixture(scope="module")
def browser():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    assert chrome and driver_bin, "needs Debian's chromium and chromium-driver (scripts/test.sh installs them)"
    opt = Options()
    opt.binary_location = chrome
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"]:
        opt.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_bin), options=opt)
    OUT.mkdir(parents=True, exist_ok=True)
    yield d
    d.quit()


def set_value(d, el_id, value):
    """Sets an input's value as a person's edit would, firing the events the page listens to."""
    d.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change'));",
        el_id,
        value,
    )


def decoded_at(d, lam):
    """Moves the slider to `lam` and waits for the sentence decoded at it."""
    set_value(d, "lambda", str(lam))
    WebDriverWait(d, 120).until(
        lambda d: (v := d.find_element(By.ID, "out").get_attribute("data-lambda")) is not None
        and float(v) == lam
        and d.find_element(By.ID, "status").text == "idle"
    )
    num = lambda i: float(d.find_element(By.ID, i).text)
    return d.find_element(By.ID, "out").text, num("cos-a"), num("cos-b")


def test_mix_slider_moves_the_sentence(server, browser):
    d = browser
    d.get(server)
    set_value(d, "a", A)
    set_value(d, "b", B)
    at = {lam: decoded_at(d, lam) for lam in (0, 0.5, 1)}
    texts = {t for t, _, _ in at.values()}
    assert len(texts) >= 2, f"the decoded text does not change with lambda: {at}"
    text1, cos_a1, cos_b1 = at[1]
    # At lambda = 1 the sentence is nearest A: its cosine to A is the highest number on the page.
    assert cos_a1 > cos_b1, at
    assert cos_a1 >= max(c for _, c, _ in at.values()) - 1e-9, at
    assert at[0][2] > at[0][1], f"at lambda = 0 the sentence is nearest B: {at}"
    d.save_screenshot(str(OUT / "mix.png"))


def test_sweep_lists_every_point(server, browser):
    d = browser
    d.find_element(By.ID, "tab-sweep").click()
    set_value(d, "sweep-steps", "5")
    d.find_element(By.ID, "sweep-run").click()
    WebDriverWait(d, 180).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sweep-table tbody tr")) == 5
    )
    assert len(d.find_elements(By.CSS_SELECTOR, "#sweep-plot circle")) == 5
    d.save_screenshot(str(OUT / "sweep.png"))


def test_rows_filter_to_the_expected_counts(server, browser):
    d = browser
    d.find_element(By.ID, "tab-rows").click()
    count = lambda: d.find_element(By.ID, "rows-count").text
    WebDriverWait(d, 30).until(lambda d: count() == "8 of 8 rows")
    set_value(d, "f-lmin", "0.3")
    set_value(d, "f-lmax", "0.7")
    assert count() == "5 of 8 rows"
    set_value(d, "f-intr", "only")
    assert count() == "2 of 8 rows"
    assert len(d.find_elements(By.CSS_SELECTOR, "#rows-table tbody tr")) == 2
    set_value(d, "f-intr", "")
    set_value(d, "f-lmin", "0")
    set_value(d, "f-lmax", "1")
    set_value(d, "f-copy", "only")  # the row that is source B word for word
    assert count() == "1 of 8 rows"
    set_value(d, "f-copy", "")
    set_value(d, "f-label", "pos")
    assert count() == "3 of 8 rows"
    set_value(d, "f-label", "")
    d.save_screenshot(str(OUT / "rows.png"))


def test_over_long_input_is_refused_on_the_page(server, browser):
    d = browser
    d.find_element(By.ID, "tab-mix").click()
    set_value(d, "a", "word " * 600)
    WebDriverWait(d, 60).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    msg = d.find_element(By.ID, "error").text
    assert "longer than the encoder's window of 256 tokens" in msg, msg
    d.save_screenshot(str(OUT / "refused.png"))
    set_value(d, "a", A)
    WebDriverWait(d, 120).until(lambda d: not d.find_element(By.ID, "error").is_displayed())


def test_a_client_that_leaves_mid_decode_does_not_stop_the_server(server):
    import http.client
    import json
    import urllib.request

    host, port = re.match(r"http://([^:]+):(\d+)/", server).groups()
    body = json.dumps({"a": A, "b": B, "lambdas": [0.1, 0.3, 0.5, 0.7, 0.9]})
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request("POST", "/api/mix", body=body, headers={"content-type": "application/json"})
    time.sleep(0.3)
    c.close()  # gone before its answer
    with urllib.request.urlopen(
        urllib.request.Request(server + "api/mix", data=json.dumps({"a": A, "b": B, "lambdas": [1]}).encode()),
        timeout=120,
    ) as r:
        rows = json.load(r)["rows"]
    assert len(rows) == 1 and rows[0]["text"]


def test_the_page_answers_while_another_client_decodes(server):
    """One client's long sweep does not block another's page: the page and /api/info come back
    before the sweep does."""
    import json
    import threading
    import urllib.request

    done = []

    def sweep():
        body = {"a": A, "b": B, "lambdas": [i / 20 for i in range(21)]}
        req = urllib.request.Request(server + "api/mix", data=json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=300) as r:
            json.load(r)
        done.append("sweep")

    t = threading.Thread(target=sweep)
    t.start()
    time.sleep(0.5)  # the sweep is decoding
    for path in ("", "api/info"):
        with urllib.request.urlopen(server + path, timeout=60) as r:
            r.read()
        done.append(path or "page")
    t.join()
    assert done == ["page", "api/info", "sweep"], done
