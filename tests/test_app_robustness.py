"""The Models page's corruption control: the report's corruptions applied to the uploaded image
before the network sees it, through Streamlit's AppTest."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.app import data
from mnist_pipeline.evaluation.corruptions import FAMILIES, corrupt
from mnist_pipeline.nn.model import load_model
from test_app import app_test, png_bytes


def test_classify_corrupted_is_the_corruption_then_the_network(model_path, fashion_test):
    loaded = load_model(model_path)
    seen, proba = data.classify(loaded, fashion_test[0][3])
    same, same_proba = data.classify_corrupted(loaded, seen, data.NO_CORRUPTION, 3)
    assert np.array_equal(same, seen) and np.array_equal(same_proba, proba)
    for family in ("rotate", "contrast"):
        corrupted, corrupted_proba = data.classify_corrupted(loaded, seen, family, 3)
        assert np.array_equal(corrupted, corrupt(seen[None], family, 3, data.CORRUPTION_SEED)[0])
        assert not np.array_equal(corrupted, seen)
        _, direct = data.classify(loaded, corrupted, center="never")
        assert np.array_equal(corrupted_proba, direct)
    assert list(data.CORRUPTION_CHOICES) == [data.NO_CORRUPTION, *FAMILIES]
    assert data.corruption_label("rotate") == "rotate (affine)" and data.corruption_help("rotate") == FAMILIES["rotate"].description


@pytest.fixture
def uploaded(trained_results, fashion_test, monkeypatch):
    """The app on the baseline model with a real test item uploaded, and the picture uploaded."""
    at = app_test(trained_results, monkeypatch).run()
    at.radio(key="source").set_value("Upload an image").run()
    picture = Image.fromarray(255 - fashion_test[0][5]).resize((140, 140), Image.Resampling.BICUBIC)
    at.file_uploader(key="upload").set_value(("item.png", png_bytes(picture), "image/png")).run()
    assert not at.exception and not at.error
    return at, picture


def test_the_control_corrupts_the_upload_before_classifying(uploaded, trained_results):
    at, picture = uploaded
    loaded = load_model(trained_results / "fashion-mnist/baseline/model.npz")
    seen, clean = data.classify(loaded, picture)
    control = at.selectbox(key="corruption")
    assert control.value == data.NO_CORRUPTION and at.slider(key="severity").disabled
    assert at.main.metric[0].value == loaded.classes[int(np.argmax(clean))]
    clean_shown = network_sees(at)

    control.select("contrast").run()
    at.slider(key="severity").set_value(3).run()
    assert not at.exception and not at.slider(key="severity").disabled
    corrupted, proba = data.classify_corrupted(loaded, seen, "contrast", 3)
    assert at.main.metric[0].value == loaded.classes[int(np.argmax(proba))]
    captions = [caption.value for caption in at.caption]
    assert f"probability {proba.max():.1%}" in captions
    said = next(text for text in captions if text.startswith("contrast at severity 3"))
    assert FAMILIES["contrast"].description in said
    assert f"Without it: {loaded.classes[int(np.argmax(clean))]} ({clean.max():.1%})" in said
    # The image shown is what the network saw: another image under the corruption, the first again without.
    assert not np.array_equal(corrupted, seen) and network_sees(at) != clean_shown
    at.selectbox(key="corruption").select(data.NO_CORRUPTION).run()
    assert network_sees(at) == clean_shown


def network_sees(at) -> str:
    """The media URL (named by its content) of the page's "what the network sees" image."""
    (url,) = [image.value[0] for image in at.main.get("image") if image.captions[0].startswith("what the network sees")]
    return url


def test_each_family_and_severity_runs_in_the_page(uploaded):
    at, _ = uploaded
    for family in ("gaussian_noise", "translate", "stripe", "edges"):
        at.selectbox(key="corruption").select(family).run()
        for severity in (1, 2, 3):
            at.slider(key="severity").set_value(severity).run()
            assert not at.exception and not at.warning, (family, severity)
            assert any(caption.value.startswith(f"{family} at severity {severity}") for caption in at.caption)
    at.selectbox(key="corruption").select(data.NO_CORRUPTION).run()
    assert not any(" at severity " in caption.value for caption in at.caption)
