"""The browser app: its data functions on a real results/ tree, the page through Streamlit's own
AppTest, and (slow) the served app in headless Chromium with a digit drawn on the canvas."""

from __future__ import annotations

import io
import json
import re
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from browser import Browser, chromium, served_app, wait_until
from hostile import CRAFTED_MODELS, crafted_model
from mnist_pipeline.app import data
from mnist_pipeline.cli import classify_files
from mnist_pipeline.errors import ImageInputError
from mnist_pipeline.layout import RESULTS_ENV
from mnist_pipeline.nn.model import load_model

APP = Path(data.__file__).with_name("streamlit_app.py")


# --- data functions, no Streamlit ---------------------------------------------------------


def test_results_dir_precedence(tmp_path):
    assert data.results_dir(["--results", "a"], {RESULTS_ENV: "b"}) == Path("a")
    assert data.results_dir(["-x", "--other"], {RESULTS_ENV: "b"}) == Path("b")
    assert data.results_dir([], {}) == Path("results")
    # pytest's own flags, as AppTest leaves them in sys.argv, are not mistaken for ours.
    assert data.results_dir(["-q", "--res", "x"], {}) == Path("results")


def test_find_experiments(trained_results, tmp_path):
    found = data.find_experiments(trained_results)
    assert [(e.dataset, e.name) for e in found] == [("fashion-mnist", "baseline"), ("fashion-mnist", "sgd")]
    assert found[0].label == "fashion-mnist / baseline" and found[0].stamp("model.npz") > 0
    # A run still training (no model yet) and other folders are not models.
    (tmp_path / "mnist" / "running").mkdir(parents=True)
    (tmp_path / "mnist" / "parsed").mkdir()
    assert data.find_experiments(tmp_path) == [] and data.find_experiments(tmp_path / "missing") == []


def test_summary_and_learning_curves(trained_results):
    experiments = data.find_experiments(trained_results)
    metrics = json.loads((experiments[1].path("metrics.json")).read_text())
    row = data.summary_row(experiments[1])
    assert row["experiment"] == "sgd" and row["test_accuracy"] == metrics["test_accuracy"]
    assert row["n_parameters"] == metrics["n_parameters"]
    curves = data.learning_curves(experiments, "val_loss")
    history = json.loads(experiments[0].path("history.json").read_text())
    assert curves["baseline"] == ([1, 2], [row["val_loss"] for row in history["epochs"]])
    assert set(curves) == {"baseline", "sgd"}
    with pytest.raises(ValueError, match="metric"):
        data.learning_curves(experiments, "bogus")


def test_mistakes_agree_with_the_metrics(trained_results, fashion_test):
    experiment = data.find_experiments(trained_results)[0]
    predictions = data.load_predictions(experiment)
    metrics = json.loads(experiment.path("metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    pairs = data.confusion_pairs(predictions)
    assert sum(count for _, _, count in pairs) == cm.sum() - np.trace(cm)
    assert all(cm[t, p] == count for t, p, count in pairs)
    counts = [count for _, _, count in pairs]
    assert counts == sorted(counts, reverse=True)
    true, predicted, count = pairs[0]
    wrong = data.mistakes(predictions, true, predicted)
    assert len(wrong) == count and len(data.mistakes(predictions, true, predicted, limit=3)) == min(3, count)
    assert [m.p_predicted for m in wrong] == sorted((m.p_predicted for m in wrong), reverse=True)
    labels = fashion_test[1]
    assert all(labels[m.id] == true for m in wrong)
    images = data.test_images(trained_results, "fashion-mnist")
    # The ids index the parsed test images: the model really predicts `predicted` for them.
    loaded = load_model(experiment.path("model.npz"))
    for m in wrong[:5]:
        _, proba = data.classify(loaded, np.asarray(images[m.id]))
        assert int(np.argmax(proba)) == predicted and proba[predicted] == pytest.approx(m.p_predicted, abs=1e-6)
    assert data.test_images(trained_results, "mnist") is None


def test_experiment_not_evaluated_yet(tmp_path, model_path):
    directory = tmp_path / "fashion-mnist" / "new"
    directory.mkdir(parents=True)
    (directory / "model.npz").write_bytes(model_path.read_bytes())
    experiment = data.find_experiments(tmp_path)[0]
    assert data.load_predictions(experiment) is None
    assert data.summary_row(experiment)["test_accuracy"] is None
    assert data.learning_curves([experiment], "val_accuracy") == {}


def test_classify_matches_the_command(tmp_path, model_path, fashion_test):
    loaded = load_model(model_path)
    photo = Image.fromarray(255 - fashion_test[0][7]).resize((300, 300)).convert("RGB")
    photo.save(tmp_path / "photo.png")
    seen, proba = data.classify(loaded, photo)
    assert seen.shape == (28, 28) and proba.shape == (10,) and proba.sum() == pytest.approx(1, abs=1e-5)
    record = classify_files(loaded, [tmp_path / "photo.png"])[0]
    assert record["label"] == int(np.argmax(proba))
    assert data.enlarge(seen, 3).shape == (84, 84)


def test_classify_frames_to_a_custom_models_image_size():
    from mnist_pipeline.nn import TrainSettings
    from mnist_pipeline.nn.model import LoadedModel, Model, architecture

    settings = TrainSettings(model="cnn", conv_channels=[2], hidden=[], dropout=0.0, batch_norm=False)
    loaded = LoadedModel(Model(architecture(settings, 20 * 16, 3, image_shape=(20, 16))), {"mean": 0.1, "std": 0.3},
                         ["a", "b", "c"], {"dataset": "custom"})
    photo = Image.new("L", (200, 120), 255)
    photo.paste(0, (60, 20, 90, 100))
    seen, proba = data.classify(loaded, photo)
    assert seen.shape == (20, 16) and proba.shape == (3,)


# --- the page, through Streamlit's AppTest -----------------------------------------------


def app_test(results: Path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV, str(results))
    return AppTest.from_file(str(APP), default_timeout=60)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_app_classifies_an_uploaded_image_with_the_chosen_model(trained_results, fashion_test, monkeypatch):
    at = app_test(trained_results, monkeypatch).run()
    assert not at.exception
    assert at.selectbox(key="model").options == ["fashion-mnist / baseline", "fashion-mnist / sgd"]
    at.selectbox(key="model").select_index(1).run()
    sgd_metrics = json.loads((trained_results / "fashion-mnist/sgd/metrics.json").read_text())
    assert at.sidebar.metric[0].value == f"{sgd_metrics['test_accuracy']:.2%}"

    at.radio(key="source").set_value("Upload an image").run()
    # A large, dark-on-light, off-centre picture of a real test item.
    item = Image.fromarray(255 - fashion_test[0][2]).resize((224, 224), Image.Resampling.BICUBIC)
    page = Image.new("L", (400, 300), 255)
    page.paste(item, (150, 40))
    at.file_uploader(key="upload").set_value(("trousers.png", png_bytes(page), "image/png")).run()
    assert not at.exception and not at.error
    loaded = load_model(trained_results / "fashion-mnist/sgd/model.npz")
    _, proba = data.classify(loaded, page)
    expected = loaded.classes[int(np.argmax(proba))]
    assert at.main.metric[0].label == "Prediction" and at.main.metric[0].value == expected
    assert f"{proba.max():.1%}" in at.caption[0].value


def test_app_mistakes_and_curves_tabs(trained_results, monkeypatch):
    at = app_test(trained_results, monkeypatch).run()
    metrics = json.loads((trained_results / "fashion-mnist/baseline/metrics.json").read_text())
    top = metrics["top_confusions"][0]
    first = at.selectbox(key="pair").options[0]
    assert first.startswith(f"{top['true']} -> {top['predicted']}  ({top['count']} image")
    at.selectbox(key="pair").select_index(1).run()
    assert not at.exception
    assert any("most confident mistakes" in caption.value for caption in at.caption)
    at.multiselect(key="compare").unselect("sgd").run()
    at.selectbox(key="metric").select("train_loss").run()
    assert not at.exception
    board = at.dataframe[0].value
    assert list(board["experiment"]) == ["baseline", "sgd"]


def test_app_reports_a_bad_upload_and_an_empty_results_dir(trained_results, tmp_path, monkeypatch):
    at = app_test(trained_results, monkeypatch).run()
    at.radio(key="source").set_value("Upload an image").run()
    at.file_uploader(key="upload").set_value(("notes.png", b"not an image at all", "image/png")).run()
    assert not at.exception and "notes.png: not a PNG" in at.error[0].value
    at.file_uploader(key="upload").set_value(("blank.png", png_bytes(Image.new("RGB", (50, 50), "white")), "image/png")).run()
    assert not at.exception and "blank" in at.warning[0].value
    empty = app_test(tmp_path, monkeypatch).run()
    assert not empty.exception and "No trained model" in empty.warning[0].value


@pytest.mark.parametrize("case", list(CRAFTED_MODELS))
def test_app_shows_a_crafted_model_file_as_one_error_line(tmp_path, model_path, monkeypatch, case):
    header, arrays, expected = CRAFTED_MODELS[case]
    directory = tmp_path / "fashion-mnist" / "crafted"
    directory.mkdir(parents=True)
    path = crafted_model(model_path, directory / "model.npz", header, arrays)
    at = app_test(tmp_path, monkeypatch).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert re.fullmatch(rf"{re.escape(str(path))}: .*{expected}.*", at.error[0].value), at.error[0].value
    # The model can still be changed: the page stops below the sidebar's choice.
    assert at.selectbox(key="model").options == ["fashion-mnist / crafted"]


# --- the served app in a real browser -----------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` on this machine (Linux /proc)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                # The kernel prints each 32-bit word of the address in host (little-endian) order.
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                found.add(socket.inet_ntop(family, raw))
    return found


def test_the_app_listens_on_this_machine_only(tmp_path):
    (tmp_path / "results").mkdir()
    with served_app(tmp_path / "results", tmp_path / "app.log") as url:
        assert listening_addresses(urllib.parse.urlsplit(url).port) == {"127.0.0.1"}
    with served_app(tmp_path / "results", tmp_path / "app.log", options=("--address", "0.0.0.0")) as url:
        assert listening_addresses(urllib.parse.urlsplit(url).port) == {"0.0.0.0"}


@pytest.fixture
def served(trained_results, tmp_path):
    with served_app(trained_results, tmp_path / "app.log") as url:
        yield url


CANVAS_RECT = """(() => {
  const canvases = [];
  const walk = root => { for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') canvases.push(el); if (el.shadowRoot) walk(el.shadowRoot); } };
  walk(document);
  const r = canvases.map(c => c.getBoundingClientRect()).filter(r => r.width >= 200).pop();
  return r ? [r.x, r.y, r.width, r.height] : null;
})()"""


@pytest.mark.slow
def test_drawing_on_the_canvas_in_a_browser(served, tmp_path):
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        browser.open(served, 1400, 1000)
        x, y, w, h = wait_until(lambda: browser.evaluate(CANVAS_RECT), what="the drawing canvas")
        stroke = [(x + 0.25 * w, y + 0.2 * h), (x + 0.75 * w, y + 0.2 * h), (x + 0.45 * w, y + 0.85 * h)]

        def mouse(kind: str, px: float, py: float) -> None:
            browser.call("Input.dispatchMouseEvent", session=True, type=kind, x=px, y=py, button="left",
                         buttons=0 if kind == "mouseReleased" else 1, clickCount=1)

        mouse("mousePressed", *stroke[0])
        for (ax, ay), (bx, by) in zip(stroke, stroke[1:], strict=False):
            for step in range(1, 16):
                mouse("mouseMoved", ax + (bx - ax) * step / 15, ay + (by - ay) * step / 15)
        mouse("mouseReleased", *stroke[-1])
        text = wait_until(lambda: (t := browser.evaluate("document.body.innerText")) and "what the network sees" in t and t,
                          what="a prediction of the drawing")
        assert "Prediction" in text and "probability" in text
        assert not [e for e in browser.errors() if "uncaught" in e]
    finally:
        browser.close()


def test_weights_too_large_for_float32_are_an_error_in_the_app_not_nan(tmp_path, model_path, fashion_test):
    """As `predict` says it per image: the Classify tab shows the reason, never 'nan%'."""
    def huge(arrays):
        arrays["layer0.W"] = np.full(arrays["layer0.W"].shape, 3e38, np.float32)

    loaded = load_model(crafted_model(model_path, tmp_path / "huge-weights.npz", arrays=huge))
    with pytest.raises(ImageInputError, match="the model's outputs for it overflow float32"):
        data.classify(loaded, fashion_test[0][0])
    with pytest.raises(ImageInputError, match="overflow float32"):
        data.classify_corrupted(loaded, fashion_test[0][0], "rotate", 2)
