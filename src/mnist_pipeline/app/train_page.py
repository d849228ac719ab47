"""The Train page: a form for a new experiment's settings, its run followed live, and the app's
experiments listed for removal. Logic lives in train_form, workflow.checkout and invocations; this lays it out."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import streamlit as st

from mnist_pipeline.app.invocations import NOTHING_TO_DO, Invocation, Invocations, steps_done, why_it_failed
from mnist_pipeline.app.train_form import FormField, as_text, overrides, read_value, train_fields
from mnist_pipeline.errors import ConfigError, RunInProgressError
from mnist_pipeline.fileio import read_json
from mnist_pipeline.layout import DatasetLayout
from mnist_pipeline.workflow.checkout import APP_EXPERIMENTS, Workflow, find_workflow, report_targets, run_targets

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


def settings_form(workflow: Workflow, config: dict, invocations: Invocations, data: dict) -> None:
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
    name = name.strip()
    if not name:
        st.error("Give the experiment a name.")
        return
    try:
        chosen = overrides(fields, {field.key: read_value(field, raw[field.key]) for field in fields})
        # Checked first, so that a refusal shows the workflow's message; checked again, and
        # written, under the run lock, as the run starts: no other tab can write in between.
        resolved = workflow.resolved({name: chosen}, data)
        invocations.start(name, run_targets(workflow, resolved, name), data=data, prepare=lambda: workflow.add_experiment(name, chosen, data))
    except RunInProgressError:
        st.warning("A run is in progress: wait for it to finish, or stop it, then press Train again. Nothing was written.")
    except ConfigError as error:
        refused("The workflow refuses these settings; nothing was written or started:", error)
    except RuntimeError as error:
        refused("Snakemake could not be started:", error)


def dataset_choice(workflow: Workflow, config: dict) -> dict:
    """Which dataset Train trains on: one a download finished for under results/ (with the source
    it came from), defaulting to the one the Models page shows, else config.yaml's. Returns the
    --config values that select it ({} for config.yaml's own)."""
    built = workflow.built_datasets()
    own = {"dataset": config["dataset"], "source": config["source"]}
    choices = dict(built)
    choices.setdefault(config["dataset"], config["source"])
    shown = st.session_state.get("model")
    names = sorted(choices)
    default = getattr(shown, "dataset", config["dataset"])
    index = names.index(default) if default in names else names.index(config["dataset"])
    dataset = st.selectbox("Dataset", names, index=index, key="train_dataset",
                           format_func=lambda name: f"{name} (from {choices[name] or 'its own mirrors'})",
                           help="the datasets under results/, each with the source its files were taken from")
    chosen = {"dataset": dataset, "source": choices[dataset]}
    return {} if chosen == own else chosen


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


def outcome(invocations: Invocations, invocation: Invocation, dataset: str) -> None:
    state, name = invocation.state, invocation.experiment
    if not name:
        st.caption(f"{invocation.record['title']}: {state}")
        return
    if state == "running":
        progress = steps_done(invocations.output())
        st.info(f"Training {name}" + (f": {progress[0]} of {progress[1]} Snakemake steps done" if progress else ": starting"))
        if st.button("Stop training", key="stop"):
            invocations.stop()
    elif state == "done":
        metrics = Path(DatasetLayout(invocations.workflow.results, dataset).experiment(name, "metrics.json"))
        accuracy = f": test accuracy {read_json(metrics)['test_accuracy']:.2%}" if metrics.is_file() else ""
        if NOTHING_TO_DO in invocations.output():
            st.info(f"Nothing to train: {name} is trained with these settings already{accuracy}.")
        else:
            st.success(f"{name} is trained{accuracy}. It is on the leaderboard and in the Models page.")
    elif state == "stopped":
        st.warning(f"The run of {name} was stopped. Press Train again to continue it.")
    elif state == "lost":
        st.error(f"The run of {name} ended without recording its outcome (its process was killed). "
                 "Press Train again to continue it.")
    else:
        st.error(f"The run of {name} failed (Snakemake exit status {invocation.record['returncode']}):")
        st.code(why_it_failed(invocations.output(), Path(DatasetLayout(invocations.workflow.results, dataset).root), invocation.record["started"]), language=None)


# Refreshed on its own, without rerunning the page: the form keeps what is being typed into it.
@st.fragment(run_every=REFRESH_SECONDS)
def run_panel(invocations: Invocations, dataset: str) -> None:
    """The last invocation: its state, its epochs so far, Stop."""
    invocation = invocations.last()
    if invocation is None:
        return
    st.subheader(f"Last run: {invocation.experiment or invocation.record['title']}")
    outcome(invocations, invocation, dataset)
    epochs = invocations.epochs(invocation, dataset) if invocation.experiment else []
    if epochs:
        epoch_charts(epochs)


def experiment_list(workflow: Workflow, invocations: Invocations, data: dict) -> None:
    """The app's experiments, each with Remove; one the workflow refuses says why in one line,
    so that it can be removed even when it makes the whole config invalid."""
    try:
        added = workflow.app_experiments()
    except ConfigError as error:
        refused(f"{APP_EXPERIMENTS} cannot be read; fix or delete it:", error)
        return
    if not added:
        return
    st.subheader("Experiments added here")
    st.caption(f"Kept in {workflow.experiments_file}, which the workflow merges over config.yaml.")
    for name, settings in sorted(added.items()):
        left, right = st.columns([5, 1])
        left.markdown(f"**{name}**: " + (", ".join(f"{k}={v}" for k, v in settings.items()) or "the `train` defaults"))
        why = workflow.entry_error(name)
        if why is not None:
            left.error(why)
        if right.button("Remove", key=f"remove_{name}", disabled=invocations.busy()):
            remove(workflow, invocations, name, data)
            st.rerun()


def remove(workflow: Workflow, invocations: Invocations, name: str, data: dict) -> None:
    """Forget `name` under the run lock, then rebuild the report without it when it can be."""
    try:
        with invocations.locked():
            workflow.remove_experiment(name, data)
        targets = report_targets(workflow, workflow.resolved(data=data))
    except RunInProgressError:
        st.warning("A run is in progress: wait for it to finish, or stop it, then remove again.")
        return
    except ConfigError:
        return  # the config is still refused for another reason: each entry says why
    if targets:
        with contextlib.suppress(RunInProgressError):
            invocations.start("", targets, data=data, title=f"rebuilding the report without {name}")


def train_page(results: Path) -> None:
    st.header("Train a new experiment")
    workflow = find_workflow(results)
    if workflow is None:
        st.info(f"Training needs the workflow beside the results: {Path(results).resolve()} is not the results/ "
                "folder of a directory holding the Snakefile.")
        return
    invocations = Invocations(workflow)
    try:
        config = workflow.resolved()
    except ConfigError as error:
        refused("The workflow's config is invalid, so nothing can be trained:", error)
        experiment_list(workflow, invocations, {})
        return
    data = dataset_choice(workflow, config)
    dataset = data.get("dataset", config["dataset"])
    st.caption(f"Trains on `{dataset}`; every field starts at config.yaml's `train` value. Pressing Train adds the "
               f"experiment to {APP_EXPERIMENTS} and runs Snakemake for it.")
    run_panel(invocations, dataset)
    settings_form(workflow, config, invocations, data)
    experiment_list(workflow, invocations, data)
