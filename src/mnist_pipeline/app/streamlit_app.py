"""The Streamlit page. Run it with `mnist-pipeline app --results DIR` (or `streamlit run` this file
`-- --results DIR`). The logic lives in `mnist_pipeline.app.data`; this file only lays it out."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from mnist_pipeline.app import data
from mnist_pipeline.app.train_page import train_page
from mnist_pipeline.data.preprocess import decode_image
from mnist_pipeline.errors import ImageInputError, PipelineError
from mnist_pipeline.evaluation.modelinfo import describe_layer
from mnist_pipeline.nn.model import load_model

try:
    from streamlit_drawable_canvas import st_canvas
except ImportError:  # the canvas is a third-party component; upload works without it
    st_canvas = None

UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]
MISTAKES_SHOWN = 48


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_model(path: str, stamp: int):
    """The loaded model; `stamp` (the file's mtime) makes a retrained model replace the cached one."""
    return load_model(path)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_predictions(_experiment: data.Experiment, key: str, stamp: int):
    return data.load_predictions(_experiment)


def percent(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def show_prediction(loaded, seen: np.ndarray, proba: np.ndarray) -> None:
    best = int(np.argmax(proba))
    st.metric("Prediction", loaded.classes[best], help="the most probable class")
    st.caption(f"probability {proba[best]:.1%}")
    st.bar_chart(pd.DataFrame({"probability": proba.astype(float)}, index=list(loaded.classes)), horizontal=True, sort=False)
    st.image(data.enlarge(seen, max(1, 140 // max(seen.shape))), caption=f"what the network sees ({seen.shape[0]}x{seen.shape[1]})")


def classify_tab(loaded) -> None:
    sources = (["Draw"] if st_canvas is not None else []) + ["Upload an image"]
    left, right = st.columns(2)
    with left:
        source = st.radio("Input", sources, horizontal=True, key="source")
        image = None
        if source == "Draw":
            st.caption("Draw one digit (or, for Fashion-MNIST, one garment) large, in the middle of the box.")
            canvas = st_canvas(
                stroke_width=18, stroke_color="#FFFFFF", background_color="#000000",
                height=280, width=280, drawing_mode="freedraw", return_image_data=True, key="canvas",
            )
            if canvas.json_data and canvas.json_data.get("objects") and canvas.image_data is not None:
                image = Image.fromarray(np.asarray(canvas.image_data, dtype=np.uint8), "RGBA")
        else:
            upload = st.file_uploader("An image of one digit (any size, any colours)", type=UPLOAD_TYPES, key="upload")
            if upload is not None:
                try:
                    image = decode_image(upload.getvalue(), upload.name)
                except ImageInputError as exc:
                    st.error(str(exc))
                else:
                    st.image(upload.getvalue(), caption=upload.name, width=200)
        # The report's corruptions (How it holds up), applied to what the network sees.
        family = st.selectbox("Corruption", data.CORRUPTION_CHOICES, format_func=data.corruption_label, key="corruption",
                              help="Corrupt the image before the network sees it, as the report's How it holds up does.")
        severity = st.slider("Severity", 1, data.MAX_SEVERITY, 1, key="severity", disabled=family == data.NO_CORRUPTION,
                             help=data.corruption_help(family))
    with right:
        if image is None:
            st.info("Draw or upload a digit to see what the network makes of it.")
            return
        try:
            clean_seen, clean_proba = data.classify(loaded, image)
        except ImageInputError as exc:
            st.warning(str(exc))
            return
        seen, proba = data.classify_corrupted(loaded, clean_seen, family, severity)
        show_prediction(loaded, seen, proba)
        if family != data.NO_CORRUPTION:
            best = int(np.argmax(clean_proba))
            st.caption(f"{family} at severity {severity}: {data.corruption_help(family)}. "
                       f"Without it: {loaded.classes[best]} ({clean_proba[best]:.1%}).")


def mistakes_tab(results, experiment: data.Experiment, classes) -> None:
    predictions = cached_predictions(experiment, str(experiment.directory), experiment.stamp("predictions.parquet"))
    if predictions is None:
        st.info(f"No predictions.parquet in {experiment.directory}: the workflow has not evaluated this model yet.")
        return
    pairs = data.confusion_pairs(predictions)
    if not pairs:
        st.success("No test image is misclassified.")
        return
    true, predicted, _ = st.selectbox(
        "Mistakes by class pair (true -> predicted), most frequent first",
        pairs,
        format_func=lambda pair: f"{classes[pair[0]]} -> {classes[pair[1]]}  ({pair[2]} image{'s' if pair[2] > 1 else ''})",
        key="pair",
    )
    wrong = data.mistakes(predictions, true, predicted, limit=MISTAKES_SHOWN)
    images = data.test_images(results, experiment.dataset)
    st.caption(f"The {len(wrong)} most confident mistakes: p(predicted) / p(true)")
    if images is None:
        st.dataframe(pd.DataFrame([vars(m) for m in wrong]), hide_index=True)
        return
    st.image(
        [data.enlarge(images[m.id], 3) for m in wrong],
        caption=[f"#{m.id}: {m.p_predicted:.0%} / {m.p_true:.0%}" for m in wrong],
        width=84,
    )


def curves_tab(experiments: list[data.Experiment], current: data.Experiment) -> None:
    same = [e for e in experiments if e.dataset == current.dataset]
    rows = pd.DataFrame([data.summary_row(e) for e in same])
    st.dataframe(rows, hide_index=True)
    chosen = st.multiselect("Experiments", [e.name for e in same], default=[e.name for e in same], key="compare")
    metric = st.selectbox("Curve", data.CURVE_METRICS, key="metric")
    curves = data.learning_curves([e for e in same if e.name in chosen], metric)
    if not curves:
        st.info("No history.json for the chosen experiments.")
        return
    frame = pd.concat({name: pd.Series(values, index=epochs) for name, (epochs, values) in curves.items()}, axis=1)
    st.line_chart(frame.rename_axis("epoch"), x_label="epoch", y_label=metric)


def main() -> None:
    st.set_page_config(page_title="mnist-pipeline", layout="wide")
    st.title("mnist-pipeline")
    results = data.results_dir(sys.argv[1:], os.environ)
    page = st.sidebar.radio("Page", ["Models", "Train"], key="page", help="Models: try, inspect and compare trained models. Train: train a new one.")
    if page == "Train":
        train_page(results)
        return
    experiments = data.find_experiments(results)
    if not experiments:
        st.warning(f"No trained model under {results}/: train one in the Train page, or run the workflow (`snakemake --cores 4`).")
        st.stop()
    experiment = st.sidebar.selectbox("Model", experiments, format_func=lambda e: e.label, key="model")
    try:
        loaded = cached_model(str(experiment.path("model.npz")), experiment.stamp("model.npz"))
    except (PipelineError, OSError) as exc:
        st.error(str(exc))
        st.stop()
    summary = data.summary_row(experiment)
    st.sidebar.metric("Test accuracy", percent(summary["test_accuracy"]))
    st.sidebar.caption(
        f"{loaded.model.n_parameters:,} parameters: " + ", ".join(describe_layer(s) for s in loaded.model.architecture["layers"])
    )
    classify, wrong, curves = st.tabs(["Classify", "Mistakes", "Learning curves"])
    with classify:
        classify_tab(loaded)
    with wrong:
        mistakes_tab(results, experiment, loaded.classes)
    with curves:
        curves_tab(experiments, experiment)


main()
