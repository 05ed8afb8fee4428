"""``smoothclap serve``: the page's function gives ``classify_files``'s probabilities and the
command line's error texts (no browser), and the page itself works in a real headless Chromium
(Debian's ``chromium`` + ``chromium-driver``, installed by ``scripts/setup.sh dev``): upload, classify,
the top label shown is ``classify_files``'s, a silent file shows its reason, several files give a
table, a microphone recording (Chromium's fake microphone) is classified alike, and neither the
page nor the server reaches beyond this machine.

``SMOOTHCLAP_SERVE_SCREENSHOT=docs/images/serve.png pytest -q tests/test_serve.py -k browser``
also saves the README's screenshot (a classified clip, 1200x900)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("opensmile")  # the test model trains on eGeMAPS captions (as tests/test_consistency.py)

from smoothclap.errors import BadInputError  # noqa: E402
from smoothclap.prompts import parse_labels  # noqa: E402
from smoothclap.serve import DEFAULT_LABELS, classify_for_page  # noqa: E402
from smoothclap.classification import classify_files  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
FAKE_MICROPHONE = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a beeping mic
LABELS = "angry, happy, sad, neutral"
TOL = 1e-6


@pytest.fixture(scope="module")
def model_dir(synth_table, shared_cache, tmp_path_factory) -> Path:
    """A small SmoothCLAP model (2 epochs, 16-d) trained on the synthetic clips, saved as a folder."""
    from smoothclap.config import RunConfig, loss_preset
    from smoothclap.trainer import prepare, train

    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size, cfg.model.embed_dim = 2, 8, 16
    cfg.loss = loss_preset("smoothclap")
    cfg.cache_dir = str(shared_cache)
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    res = train(cfg, prep, run_dir=tmp_path_factory.mktemp("serve-run"), progress=False)
    return res.run_dir / "model"


@pytest.fixture(scope="module")
def model(model_dir):
    from smoothclap.models import load_model

    return load_model(model_dir)


@pytest.fixture(scope="module")
def clips(synth_table) -> list[str]:
    """Three clips of different emotions."""
    return synth_table.groupby("label").head(1)["file"].astype(str).tolist()[:3]


@pytest.fixture(scope="module")
def silent_wav(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bad") / "silent.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    return str(path)


def _probs(table, labels) -> np.ndarray:
    return table[[f"p_{lab}" for lab in labels]].to_numpy(dtype=np.float64)


# -- the page's function, no browser ----------------------------------------------------------------
@pytest.mark.parametrize("templates", ["bare", "ensemble"])
def test_page_gives_the_probabilities_of_classify(model, clips, templates):
    labels = parse_labels(LABELS)
    probs, table, description, message = classify_for_page(model, clips[0], LABELS, templates)
    want = classify_files(model, [clips[0]], labels, templates=templates)
    assert set(probs) == set(labels)
    diff = np.abs(np.array([probs[lab] for lab in labels]) - _probs(want.table, labels)[0]).max()
    assert diff <= TOL, diff
    assert table["top label"].tolist() == [want.table["pred"].iloc[0]]
    assert message.startswith(f"{Path(clips[0]).name}: {want.table['pred'].iloc[0]} (")
    # the model was trained on eGeMAPS captions: it describes the clip in their words
    assert description and "pitch" in description and "\n" not in description


def test_bad_audio_shows_the_command_line_error(model, silent_wav):
    with pytest.raises(BadInputError) as err:  # what `smoothclap classify` prints after "error: "
        classify_files(model, [silent_wav], parse_labels(LABELS))
    probs, table, description, message = classify_for_page(model, silent_wav, LABELS, "bare")
    assert probs is None and description == ""
    assert message == f"error: silent.wav: {err.value.reason}"
    assert "silent (peak below" in message and "Traceback" not in message
    assert table["ranking"].tolist() == [f"skipped: {err.value.reason}"]


@pytest.mark.parametrize("text", ["angry", "angry, angry, sad", "angry,,sad", ""])
def test_bad_labels_show_the_command_line_error(model, clips, text):
    with pytest.raises(BadInputError) as err:
        parse_labels(text)
    probs, table, _, message = classify_for_page(model, clips[0], text, "bare")
    assert probs is None and table.empty
    assert message == f"error: {err.value}" and message.startswith("error: labels: ")


def test_unknown_template_set_and_no_file(model, clips):
    assert classify_for_page(model, clips[0], LABELS, "poetic")[3].startswith("error: template set: unknown 'poetic'")
    probs, table, _, message = classify_for_page(model, None, LABELS, "bare")
    assert probs is None and table.empty and "upload" in message


def test_several_files_give_a_table_and_skip_bad_ones(model, clips, silent_wav):
    files = [*clips, silent_wav]
    labels = parse_labels(LABELS)
    probs, table, description, message = classify_for_page(model, files, LABELS, "feeling")
    want = classify_files(model, files, labels, templates="feeling", skip_bad=True)
    assert table["file"].tolist() == [Path(f).name for f in files]
    assert table["top label"].tolist()[:3] == want.table["pred"].tolist()[:3]
    for (_, ranked), row in zip(want.ranked(len(labels)), table.itertuples()):
        assert row.ranking == ", ".join(f"{lab} {p:.3f}" for lab, p in ranked)
        assert abs(row.probability - ranked[0][1]) < 1e-4
    # the chart shows the first file, with classify's probabilities
    diff = np.abs(np.array([probs[lab] for lab in labels]) - _probs(want.table, labels)[0]).max()
    assert diff <= TOL, diff
    assert table["ranking"].iloc[3].startswith("skipped: silent (peak below")
    assert message.splitlines() == ["classified 3 of 4 files; skipped 1:",
                                    f"error: silent.wav: {want.skipped.items[0][1]}"]
    assert len(description.splitlines()) == 3 and all(table["description"].iloc[:3])


class _Broken:
    """A model whose text tower fails (a bug, not a user's mistake)."""

    def eval(self):
        return self

    def embed_text(self, texts):
        raise RuntimeError("internal detail that the page must not show")


def test_unexpected_error_is_one_short_line_and_logged(clips, caplog):
    with caplog.at_level(logging.ERROR, logger="smoothclap"):
        probs, table, _, message = classify_for_page(_Broken(), clips[0], LABELS, "bare")
    assert probs is None and table.empty
    assert message.startswith("error: something went wrong") and "RuntimeError" in message
    assert "internal detail" not in message and "Traceback" not in message
    assert any(r.exc_info and "internal detail" in str(r.exc_info[1]) for r in caplog.records)


def test_no_gradio_needed_to_import_and_a_clear_error_without_it():
    code = ("import sys; import smoothclap.serve as s; assert 'gradio' not in sys.modules, 'imported gradio'\n"
            "sys.modules['gradio'] = None\n"
            "try:\n    s.build_app({'m': object()})\nexcept s.BadInputError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "gradio: not installed: pip install 'smoothclap[serve]'"


def test_hf_clap_baseline_classifies_without_descriptions(clips, tmp_path):
    """A ``hf-clap:`` model (a tiny random ClapModel saved offline) takes the same path; it has no
    caption bins, so the page says why there is no description."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from tiny_models import tiny_clap
    except ImportError as e:  # the helper is shared with tests/test_hf_clap.py
        pytest.skip(f"tests/tiny_models.py has no tiny_clap ({e})")
    from smoothclap.serve import load_models

    spec = f"hf-clap:{tiny_clap(tmp_path / 'clap', fusion=False)}"
    (name, clap), = load_models([spec]).items()
    assert name == spec
    probs, table, description, message = classify_for_page(clap, clips[:2], "angry, sad", "feeling")
    want = classify_files(clap, clips[:2], ["angry", "sad"], templates="feeling")
    diff = np.abs(np.array([probs["angry"], probs["sad"]]) - _probs(want.table, ["angry", "sad"])[0]).max()
    assert diff <= TOL, diff
    assert description.startswith("(no description: the model has no caption bins")
    assert message.startswith("classified 2 files") and len(table) == 2


def test_model_names():
    from smoothclap.serve import model_names

    assert model_names(["smoothclap_demo/models/smoothclap", "smoothclap_demo/models/clap"]) == ["smoothclap", "clap"]
    assert model_names(["runs/a/model", "runs/b/best_model", "hf-clap:laion/clap-htsat-unfused"]) == [
        "a/model", "b/best_model", "hf-clap:laion/clap-htsat-unfused"]
    assert model_names(["x/m", "y/m"]) == ["x/m", "y/m"]


def test_no_model_given_needs_the_demo_models(tmp_path, monkeypatch):
    from smoothclap.serve import load_models

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError) as err:
        load_models(None)
    assert "smoothclap_demo/models/smoothclap" in str(err.value) and "smoothclap demo" in str(err.value)


def test_app_is_built_with_analytics_off(model):
    from smoothclap.serve import build_app

    app = build_app({"a": model, "b": model})
    assert app.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


# -- the page in a real browser ---------------------------------------------------------------------
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


@pytest.fixture
def outside_lookups(monkeypatch) -> list[str]:
    """Host names or addresses this process tries to reach beyond this machine (name lookups and
    connects), recorded while the test runs: gradio's analytics, version check, share tunnel."""
    seen: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *a, **kw):
        if host is not None and str(host) not in LOCAL_HOSTS:
            seen.append(str(host))
        return real_getaddrinfo(host, *a, **kw)

    def connect(self, address):
        if isinstance(address, tuple) and str(address[0]) not in LOCAL_HOSTS:
            seen.append(str(address[0]))
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + FAKE_MICROPHONE:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    return driver


def _outside_requests(driver) -> list[str]:
    """http(s) URLs the page asked for anywhere but this machine."""
    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.split("//", 1)[1].startswith(
                    ("127.0.0.1", "localhost")):
                out.append(url)
    return out


def _save_screenshot(driver, path: Path) -> None:
    """PNG of the page (palette-compressed when it would exceed 200 KB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    if path.stat().st_size > 200_000:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated")  # gradio's own event
@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")  # statistics, under pandas 3
def test_page_in_a_headless_browser(model_dir, model, clips, silent_wav, tmp_path, outside_lookups):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no browser: /usr/bin/chromium and /usr/bin/chromedriver are missing "
                    "(scripts/setup.sh dev installs Debian's chromium and chromium-driver)")
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from smoothclap.serve import launch

    t0 = time.perf_counter()
    served = launch([str(model_dir)], port=_free_port(), block=False, quiet=True)
    driver = None
    try:
        assert served.url.startswith("http://127.0.0.1:")
        driver = _browser(tmp_path)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        css = lambda sel: driver.find_elements(By.CSS_SELECTOR, sel)  # noqa: E731

        def classify(path: str) -> str:
            """Open the page, upload ``path`` into the clip box, press Classify; the message shown."""
            driver.get(served.url)
            wait.until(lambda d: css("#audio input[type=file]"))[0].send_keys(path)
            wait.until(lambda d: css("#audio [data-testid=download-link]"))  # the upload reached the server
            driver.find_element(By.ID, "classify").click()
            return message_text()

        def message_text(contains: str = "") -> str:
            """The message the page shows (its lines), once one containing ``contains`` is there."""
            def shown(d):
                text = "\n".join(e.text for e in css("#message .sc-info, #message .sc-error")).strip()
                return text if text and contains in text else None
            return wait.until(shown)

        # a real clip: the top label shown is the one `smoothclap classify` gives
        message = classify(clips[0])
        want = classify_files(model, [clips[0]], parse_labels(DEFAULT_LABELS))
        top = want.table["pred"].iloc[0]
        shown = wait.until(lambda d: css("#ranked [data-testid=label-output-value]"))[0].text.strip()
        assert shown == top, (shown, top, message)
        assert message.startswith(f"{Path(clips[0]).name}: {top} (")
        assert css(f"#ranked [data-testid='{top}-confidence-set']")
        assert "pitch" in driver.find_element(By.CSS_SELECTOR, "#description textarea").get_attribute("value")
        if os.environ.get("SMOOTHCLAP_SERVE_SCREENSHOT"):
            _save_screenshot(driver, Path(os.environ["SMOOTHCLAP_SERVE_SCREENSHOT"]))

        # a silent file: the command line's error, no traceback, no chart
        message = classify(silent_wav)
        assert message == "error: silent.wav: silent (peak below -70.0 dBFS)", message
        assert not css("#ranked [data-testid=label-output-value]")
        assert "Traceback" not in driver.page_source

        # several files at once: one table row per file, the bad one with its reason
        driver.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Several files')]").click()
        wait.until(lambda d: css("#files input[type=file]"))[0].send_keys("\n".join([clips[1], silent_wav]))
        wait.until(lambda d: len(css("#files tbody tr, #files .file-preview tr")) >= 2 or None)
        driver.find_element(By.ID, "classify-files").click()
        message_text("classified 1 of 2")
        table = driver.find_element(By.ID, "table").text
        assert Path(clips[1]).name in table and "skipped: silent (peak below" in table

        # the microphone (Chromium's fake one): the recording is uploaded and classified alike
        driver.get(served.url)
        wait.until(lambda d: css("#audio button[aria-label='Record audio']"))[0].click()
        wait.until(lambda d: [b for b in css("#audio button.record-button") if b.is_displayed()] or None)[0].click()
        time.sleep(1.5)
        wait.until(lambda d: [b for b in css("#audio button.stop-button") if b.is_displayed()] or None)[0].click()
        link = wait.until(lambda d: css("#audio [data-testid=download-link]"))[0].get_attribute("href")
        recorded = unquote(link.split("/gradio_api/file=", 1)[1])  # the server's copy of the recording
        driver.find_element(By.ID, "classify").click()
        message = message_text("audio.wav")
        top = classify_files(model, [recorded], parse_labels(DEFAULT_LABELS)).table["pred"].iloc[0]
        assert message.startswith(f"audio.wav: {top} (") and Path(recorded).exists()

        assert _outside_requests(driver) == []  # offline: no fonts, CDN or analytics from the page
        assert outside_lookups == []  # nor from the server (analytics, version check, share link)
    finally:
        if driver is not None:
            driver.quit()
        served.close()
    assert time.perf_counter() - t0 < 120
