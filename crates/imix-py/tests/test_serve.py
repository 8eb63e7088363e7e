"""The explorer from Python: `python -m inversed_mixup serve` serves the page and the mix API (with
a bundle's task model), refuses bad arguments, and Ctrl-C stops it cleanly."""

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

import inversed_mixup


def test_module_serves_the_page_and_stops_on_ctrl_c(bundle):
    p = subprocess.Popen(
        [sys.executable, "-m", "inversed_mixup", "serve", "--port", "0", "--model", str(bundle)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        m = re.search(r"http://\S+/", line)
        assert m, (line, p.stderr.read() if p.poll() is not None else "")
        url = m.group(0)
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"imix explorer" in r.read()
        with urllib.request.urlopen(url + "api/info", timeout=30) as r:
            info = json.load(r)
        assert len(info["labels"]) == 2, info
        a, b = info["labels"]
        body = {"a": "a warm and funny film", "b": "a dull and lifeless film", "label_a": a, "label_b": b,
                "lambdas": [0.25, 1.0], "max_new_tokens": 8}
        req = urllib.request.Request(url + "api/mix", data=json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=120) as r:
            rows = json.load(r)["rows"]
        assert [r["lambda"] for r in rows] == [0.25, 1.0]
        # With a bundle and both labels: the Mixup soft label, the prediction and a verdict.
        assert rows[0]["soft_label"] == {a: 0.25, b: 0.75}
        assert abs(sum(rows[0]["predicted"].values()) - 1) < 1e-6
        assert isinstance(rows[0]["intrusion"], bool)
    finally:
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=30)
    assert rc == 0, p.stderr.read()


def test_bad_arguments_are_refused_before_any_model_loads(tmp_path):
    with pytest.raises(inversed_mixup.ImixError, match="port 70000"):
        inversed_mixup.serve(70000)
    with pytest.raises(inversed_mixup.ImixError, match="not an IP address"):
        inversed_mixup.serve(0, "local host")
    with pytest.raises(RuntimeError, match="no-such.tsv"):
        inversed_mixup.serve(0, input=tmp_path / "no-such.tsv")
