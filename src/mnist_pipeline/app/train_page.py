"""The Train page: a form for a new experiment's settings, its run followed live, and the app's
experiments listed for removal. Logic lives in train_form, workflow and runs; this lays it out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from mnist_pipeline.app.runs import NOTHING_TO_DO, Run, Runs, steps_done, why_it_failed
from mnist_pipeline.app.train_form import FormField, as_text, overrides, read_value, train_fields
from mnist_pipeline.app.workflow import APP_EXPERIMENTS, Workflow, find_workflow, report_targets, run_targets
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.fileio import read_json
from mnist_pipeline.layout import DatasetLayout

FIELD_COLUMNS = 3
REFRESH_SECONDS = 1.0


def field_widget(field: FormField):
    """The widget for one train key, showing its default; returns what the user left in it."""
    key, label, tip = f"train_{field.key}", field.key, field.help
    if field.kind == "choice":
        return st.selectbox(label, field.choices, index=field.choices.index(field.default), help=tip, key=key)
    if field.kind == "boolean":
        return st.checkbox(label, value=field.default, help=tip, key=key)
    if field.kind == "integer":
        # No min/max here: a value out of range must reach the workflow's check and its message.
        return st.number_input(label, value=int(field.default), step=1, help=tip, key=key)
    if field.kind == "number":
        return st.number_input(label, value=float(field.default), format="%g", help=tip, key=key)
    placeholder = "e.g. 256, 128" if field.kind == "list" else "empty for null"
    return st.text_input(label, value=as_text(field, field.default), help=tip, placeholder=placeholder, key=key)


def settings_form(workflow: Workflow, config: dict, runs: Runs) -> None:
    fields = train_fields(config["train"])
    with st.form("train_form"):
        name = st.text_input("Experiment name", key="experiment_name", help="a new name, or one the app added before to replace it")
        columns = st.columns(FIELD_COLUMNS)
        raw = {}
        for i, field in enumerate(fields):
            with columns[i % FIELD_COLUMNS]:
                raw[field.key] = field_widget(field)
        pressed = st.form_submit_button("Train", type="primary")
    if not pressed:
        return
    if not name.strip():
        st.error("Give the experiment a name.")
        return
    if runs.busy():
        st.warning("A run is in progress: wait for it to finish, or stop it, then press Train again.")
        return
    try:
        values = {field.key: read_value(field, raw[field.key]) for field in fields}
        workflow.add_experiment(name.strip(), overrides(fields, values))
        resolved = workflow.resolved()
        runs.start(name.strip(), run_targets(workflow, resolved, name.strip()))
    except ConfigError as error:
        refused("The workflow refuses these settings; nothing was written or started:", error)
    except RuntimeError as error:
        refused("Snakemake could not be started:", error)


def refused(why: str, error: Exception) -> None:
    # As a code block: the message is the workflow's plain text, one key per line, which
    # markdown would run together (and whose underscores it would read as emphasis).
    st.error(why)
    st.code(str(error), language=None)


def epoch_charts(epochs: list[dict]) -> None:
    frame = pd.DataFrame(epochs).set_index("epoch")
    last = epochs[-1]
    st.caption(f"epoch {last['epoch']} of {last['epochs']}: validation accuracy {last['val_accuracy']:.4f}, "
               f"validation loss {last['val_loss']:.4f}")
    loss, accuracy = st.columns(2)
    with loss:
        st.line_chart(frame[["train_loss", "val_loss"]], x_label="epoch", y_label="loss")
    with accuracy:
        st.line_chart(frame[["train_accuracy", "val_accuracy"]], x_label="epoch", y_label="accuracy")


def outcome(runs: Runs, run: Run, dataset: str) -> None:
    state, name = run.state, run.experiment
    if not name:
        st.caption(f"{run.record['title']}: {state}")
        return
    if state == "running":
        progress = steps_done(runs.output())
        st.info(f"Training {name}" + (f": {progress[0]} of {progress[1]} Snakemake steps done" if progress else ": starting"))
        if st.button("Stop training", key="stop"):
            runs.stop()
    elif state == "done":
        metrics = Path(DatasetLayout(runs.workflow.results, dataset).experiment(name, "metrics.json"))
        accuracy = f": test accuracy {read_json(metrics)['test_accuracy']:.2%}" if metrics.is_file() else ""
        if NOTHING_TO_DO in runs.output():
            st.info(f"Nothing to train: {name} is trained with these settings already{accuracy}.")
        else:
            st.success(f"{name} is trained{accuracy}. It is on the leaderboard and in the Models page.")
    elif state == "stopped":
        st.warning(f"The run of {name} was stopped. Press Train again to continue it.")
    elif state == "lost":
        st.error(f"The run of {name} ended without recording its outcome (its process was killed). "
                 "Press Train again to continue it.")
    else:
        st.error(f"The run of {name} failed (Snakemake exit status {run.record['returncode']}):")
        st.code(why_it_failed(runs.output(), Path(DatasetLayout(runs.workflow.results, dataset).root), run.record["started"]), language=None)


# Refreshed on its own, without rerunning the page: the form keeps what is being typed into it.
@st.fragment(run_every=REFRESH_SECONDS)
def run_panel(runs: Runs, dataset: str) -> None:
    """The last run: its state, its epochs so far, Stop."""
    run = runs.last()
    if run is None:
        return
    st.subheader(f"Last run: {run.experiment or run.record['title']}")
    outcome(runs, run, dataset)
    epochs = runs.epochs(run, dataset) if run.experiment else []
    if epochs:
        epoch_charts(epochs)


def app_experiments(workflow: Workflow, runs: Runs, config: dict) -> None:
    added = workflow.app_experiments()
    if not added:
        return
    st.subheader("Experiments added here")
    st.caption(f"Kept in {workflow.experiments_file}, which the workflow merges over config.yaml.")
    for name, settings in sorted(added.items()):
        left, right = st.columns([5, 1])
        left.markdown(f"**{name}**: " + (", ".join(f"{k}={v}" for k, v in settings.items()) or "the `train` defaults"))
        if right.button("Remove", key=f"remove_{name}", disabled=runs.busy()):
            workflow.remove_experiment(name)
            resolved = workflow.resolved()
            targets = report_targets(workflow, resolved)
            if targets:
                runs.start("", targets, title=f"rebuilding the report without {name}")
            st.rerun()


def train_page(results: Path) -> None:
    st.header("Train a new experiment")
    workflow = find_workflow(results)
    if workflow is None:
        st.info(f"Training needs the workflow beside the results: {Path(results).resolve()} is not the results/ "
                "folder of a directory holding the Snakefile.")
        return
    try:
        config = workflow.resolved()
    except ConfigError as error:
        refused("The workflow's config is invalid, so nothing can be trained:", error)
        return
    runs = Runs(workflow)
    st.caption(f"Trains on `{config['dataset']}` as config.yaml sets it; every field starts at config.yaml's "
               f"`train` value. Pressing Train adds the experiment to {APP_EXPERIMENTS} and runs Snakemake for it.")
    run_panel(runs, config["dataset"])
    settings_form(workflow, config, runs)
    app_experiments(workflow, runs, config)
