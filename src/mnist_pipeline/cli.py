"""The `mnist-pipeline` command: classify images with a trained model, describe a model, open the app.

    mnist-pipeline predict MODEL.npz FILE... [--json] [--top K] [--center auto|always|never]
    mnist-pipeline info MODEL.npz [--json]
    mnist-pipeline app [--results DIR] [--address ADDR] [--port N] [--headless]
    mnist-pipeline runs [--results DIR] [--dataset NAME] [--json]
    mnist-pipeline runs --diff A B | --prune --keep N

Exit status: 0 when everything worked, 1 when some input could not be classified (the others
are still printed), 2 for a usage error or an unusable model file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.data.preprocess import CENTER_MODES, OVERFLOW, framing_for, load_images, model_inputs
from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.evaluation.modelinfo import describe_layer, model_info
from mnist_pipeline.evaluation.report.comparison import settings_diff
from mnist_pipeline.evaluation.report.formatting import change_text, pct, seconds, settings_text, value_text
from mnist_pipeline.evaluation.rundiff import RunDiff, diff_runs
from mnist_pipeline.layout import RESULTS, RESULTS_ENV
from mnist_pipeline.nn.model import load_model
from mnist_pipeline.nn.settings import TrainSettings
from mnist_pipeline.runstore.store import (
    KeptRun,
    RunNotFound,
    claim_for_pruning,
    datasets,
    prune,
    read_current,
    read_store,
    resolve,
)
from mnist_pipeline.workflow.checkout import Workflow
from mnist_pipeline.workflow.config import experiment_settings
from mnist_pipeline.workflow.plan import checkout_stage_code, planned_runs

PROG = "mnist-pipeline"
APP_SCRIPT = Path(__file__).parent / "app" / "streamlit_app.py"
# Streamlit alone listens on every interface: the app would show anyone on the network the results.
DEFAULT_ADDRESS = "127.0.0.1"


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def top_classes(proba: np.ndarray, classes: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The k most probable classes of one probability row (k,), most probable first."""
    order = np.argsort(-proba, kind="stable")[:k]
    return [{"label": int(i), "class": str(classes[i]), "probability": round(float(proba[i]), 6)} for i in order]


def classify_files(loaded, paths: Sequence[str], top: int = 1, center: str = "auto") -> list[dict[str, Any]]:
    """One record per image of each file, in order: file, index, label, class, probability, top.

    `index` is None for a file holding one image, else the image's position in the file's
    stack. A file that cannot be read gives one record with `error` and null label/probability.
    """
    framing = framing_for(loaded.metadata.get("dataset"))
    inputs: list[Any] = []
    for path in paths:
        try:
            inputs.append(load_images(path, framing, center, loaded.image_shape))
        except PipelineError as exc:
            inputs.append(str(exc))  # our messages name the file already
        except OSError as exc:
            inputs.append(f"{path}: cannot read it ({exc.strerror or exc})")
    batches = [item.images for item in inputs if not isinstance(item, str)]
    # Weights far larger than training makes them overflow to inf and NaN: said per image below.
    with np.errstate(over="ignore", invalid="ignore"):
        proba = loaded.model.predict_proba(model_inputs(np.concatenate(batches), loaded.normalization)) if batches else None
    records, row = [], 0
    for path, item in zip(paths, inputs, strict=False):
        if isinstance(item, str):
            records.append(_error_record(os.fspath(path), None, item))
            continue
        for index in range(len(item.images)):
            at = index if item.indexed else None
            if not np.isfinite(proba[row]).all():
                name = item.path + (f"[{index}]" if at is not None else "")
                records.append(_error_record(item.path, at, f"{name}: {OVERFLOW}"))
            else:
                ranked = top_classes(proba[row], loaded.classes, top)
                records.append({"file": item.path, "index": at, **ranked[0], "top": ranked})
            row += 1
    return records


def _error_record(file: str, index: int | None, error: str) -> dict[str, Any]:
    return {"file": file, "index": index, "label": None, "class": None, "probability": None, "error": error}


def format_record(record: dict[str, Any]) -> str:
    """One human-readable line: `file[index]: class 97.3% | next class 2.1%`."""
    name = record["file"] + (f"[{record['index']}]" if record["index"] is not None else "")
    return f"{name}: " + " | ".join(f"{entry['class']} {entry['probability']:.1%}" for entry in record["top"])


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        loaded = load_model(args.model)
    except (PipelineError, OSError) as exc:
        return _fail(str(exc))
    if args.top < 1:
        return _fail(f"--top must be at least 1, got {args.top}")
    records = classify_files(loaded, args.files, min(args.top, len(loaded.classes)), args.center)
    failed = [record for record in records if "error" in record]
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for record in records:
            if "error" not in record:
                print(format_record(record))
    for record in failed:
        print(f"{PROG}: error: {record['error']}", file=sys.stderr)
    return 1 if failed else 0


def settings_lines(settings: dict[str, Any]) -> list[str]:
    """One line per training setting, in TrainSettings' order, with the default beside each that differs.
    Keys TrainSettings does not know (a model from another version) follow, as they are."""
    defaults = TrainSettings().as_dict()
    order = [setting.name for setting in TrainSettings.describe() if setting.name in settings]
    order += sorted(set(settings) - set(defaults))
    return [
        f"  {key}: {settings[key]}" + (f"  (default {defaults[key]})" if key in defaults and settings[key] != defaults[key] else "")
        for key in order
    ]


def format_info(info: dict[str, Any]) -> str:
    arch = info["architecture"]
    lines = [
        f"model:        {info['model']}",
        f"dataset:      {info['dataset']}  " + (f"run: {info['run']}" if info["run"] else f"experiment: {info['experiment']}"),
        f"classes:      {', '.join(info['classes'])}",
        f"architecture: {arch.get('model', '?')}, {info['image_shape'][0]}x{info['image_shape'][1]} images"
        f" ({arch['n_inputs']} inputs) -> {arch['n_classes']} classes,"
        f" {info['n_parameters']:,} parameters",
        "  " + ", ".join(describe_layer(spec) for spec in arch["layers"]),
        f"normalization: mean {info['normalization'].get('mean')}, std {info['normalization'].get('std')} (of pixel/255)",
        f"training:     epochs run {info['epochs_run']}, weights of epoch {info['best_epoch']}"
        + (f", {info['train_seconds']:.1f} s" if info["train_seconds"] is not None else "")
        + (f" on {info['threads']} threads" if info["threads"] is not None else ""),
    ]
    lines += settings_lines(info["settings"] or {})
    metrics = info["metrics"]
    if metrics is None:
        lines.append("metrics:      none found (no metrics.json beside the model)")
    else:
        lines.append(f"metrics:      test accuracy {metrics['test_accuracy']:.2%}, validation accuracy {metrics['val_accuracy']:.2%}")
        per_class = metrics.get("per_class") or {}
        # metrics.json sorts its keys; the classes' own order is the one people know.
        for name in (name for name in info["classes"] if name in per_class):
            scores = per_class[name]
            if scores.get("absent"):
                lines.append(f"  {name}: absent (no test images)")
                continue
            lines.append(f"  {name}: precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, f1 {scores['f1']:.3f}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    try:
        loaded = load_model(args.model)
        info = model_info(args.model, loaded)
    except (PipelineError, OSError, ValueError) as exc:
        return _fail(str(exc))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def streamlit_command(
    results: str | os.PathLike, port: int | None = None, headless: bool = False, address: str = DEFAULT_ADDRESS
) -> list[str]:
    """The `streamlit run` command line that serves the app on `results`, listening on `address` only."""
    command = [sys.executable, "-m", "streamlit", "run", os.fspath(APP_SCRIPT), "--browser.gatherUsageStats", "false"]
    command += ["--server.address", address]
    if headless:
        command += ["--server.headless", "true"]
    if port is not None:
        command += ["--server.port", str(port)]
    return command + ["--", "--results", os.fspath(Path(results).resolve())]


def cmd_app(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("streamlit") is None:
        return _fail("the app needs Streamlit: pip install 'mnist-pipeline[app]'")
    if not Path(args.results).is_dir():
        return _fail(f"{args.results}: no such results directory (run the workflow first: snakemake --cores 4)")
    command = streamlit_command(args.results, args.port, args.headless, args.address)
    # Become the server rather than wrap it: Ctrl-C and a service manager's SIGTERM then reach
    # Streamlit itself, and no orphaned server outlives a killed launcher.
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as left-aligned columns two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=False)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in (columns, *rows)]


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run_entry(dataset: str, run: KeptRun, defaults: dict[str, Any]) -> dict[str, Any]:
    """One kept run as `runs --json` lists it."""
    return {
        "dataset": dataset,
        "run": run.id,
        "experiment": ", ".join(run.names or run.current_for),
        "experiments": run.names,
        "finished": run.finished,
        "settings": run.settings,
        "differs": settings_diff(run.settings, defaults),
        "test_accuracy": run.metrics.get("test_accuracy"),
        "val_accuracy": run.metrics.get("val_accuracy"),
        "train_seconds": run.metrics.get("train_seconds"),
        "current": run.current,
        "current_for": run.current_for,
        "bytes": run.size,
    }


RUN_COLUMNS = ("run", "experiment", "finished", "test acc", "val acc", "train time", "current", "differs from defaults")


def format_runs(dataset: str, entries: list[dict[str, Any]]) -> list[str]:
    total = sum(entry["bytes"] for entry in entries)
    rows = [
        [entry["run"], entry["experiment"] or "-", entry["finished"].replace("T", " ").removesuffix("+00:00"),
         pct(entry["test_accuracy"]), pct(entry["val_accuracy"]), seconds(entry["train_seconds"]),
         "yes" if entry["current"] else "", settings_text(entry["differs"])]
        for entry in entries
    ]
    return [f"{dataset}: {len(entries)} kept run(s), {megabytes(total)}"] + ["  " + line for line in text_table(RUN_COLUMNS, rows)]


def _stores(args: argparse.Namespace) -> list[str]:
    found = datasets(args.results)
    if args.dataset is not None:
        if args.dataset not in found:
            raise RunNotFound(f"{args.results}: no runs of dataset {args.dataset!r} (datasets with runs: {', '.join(found) or 'none'})")
        return [args.dataset]
    if not found:
        raise RunNotFound(f"{args.results}: no kept runs (run the workflow first: snakemake --cores 4)")
    return found


def _metric_text(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key.endswith("accuracy"):
        return pct(value)
    if key == "train_seconds":
        return seconds(value)
    return value_text(round(value, 4) if isinstance(value, float) else value)


def diff_entry(diff: RunDiff) -> dict[str, Any]:
    change = diff.accuracy_change
    return {
        "a": diff.a.id, "b": diff.b.id,
        "settings": {key: list(pair) for key, pair in diff.settings.items()},
        "metrics": {key: list(pair) for key, pair in diff.metrics.items()},
        "same_data": diff.same_data, "same_code": diff.same_code,
        "accuracy_change": None if change is None else {"difference": change[0], "ci95": [change[1], change[2]]},
        "n_test": diff.n_test,
    }


def format_diff(diff: RunDiff) -> list[str]:
    def who(run: KeptRun) -> str:
        names = ", ".join(run.names) or "no experiment"
        return f"{run.id}  {names}{' (current)' if run.current else ''}, finished {run.finished}"

    lines = [f"A  {who(diff.a)}", f"B  {who(diff.b)}", "", "settings (A -> B):"]
    lines += [f"  {key}: {value_text(a)} -> {value_text(b)}" for key, (a, b) in diff.settings.items()] or ["  the same"]
    if not diff.same_data:
        lines.append("  prepared data: different (dataset, source or prepare settings, or their code)")
    if not diff.same_code:
        lines.append("  training code: different")
    lines += ["", "metrics (A -> B):"]
    lines += [f"  {key}: {_metric_text(key, a)} -> {_metric_text(key, b)}" for key, (a, b) in diff.metrics.items()] or ["  the same"]
    if diff.accuracy_change is None:
        lines += ["", "test accuracy B - A: not comparable (the two were evaluated on different test items)"]
    else:
        lines += ["", f"test accuracy B - A: {change_text(diff.accuracy_change)} percentage points "
                      f"(paired bootstrap 95% interval over the same {diff.n_test:,} test images)"]
    return lines


def runs_in_use(results: Path) -> dict[str, set[str]]:
    """Dataset -> the runs that the config of the workflow whose results/ is `results` makes
    now (config.yaml with experiments.yaml), with that workflow's run lock taken until this
    process ends; {} when `results` is no workflow's. RunInProgressError while a run is going,
    ConfigError when its config cannot be read: either way nothing may be pruned."""
    workdir = results.absolute().parent
    if results.absolute().name != "results" or not (workdir / "Snakefile").is_file():
        return {}
    claim_for_pruning(workdir, results)
    workflow = Workflow(workdir)
    try:
        config = workflow.resolved()
        planned = planned_runs(config, experiment_settings(config, workflow.schema()), checkout_stage_code(workdir))
    except (PipelineError, OSError, ValueError, SyntaxError) as error:
        raise ConfigError(f"cannot tell which runs the config in {workdir} uses, so nothing was pruned: {error}") from None
    return {config["dataset"]: {record["run"] for record in planned.values()}}


def cmd_runs(args: argparse.Namespace) -> int:
    if (args.keep is None) != (not args.prune):
        return _fail("--prune needs --keep N (and --keep goes with --prune)")
    try:
        stores = _stores(args)
        if args.diff:
            kept = {dataset: read_store(Path(args.results) / dataset) for dataset in stores}
            # A dataset whose runs all failed before training (a download with no network)
            # has a store but no run: it cannot hold A or B.
            stores = [dataset for dataset, runs in kept.items() if runs] or stores
            if len(stores) > 1:
                return _fail(f"runs of several datasets ({', '.join(stores)}): say which with --dataset")
            diff = diff_runs(*(resolve(kept[stores[0]], ref) for ref in args.diff))
            print(json.dumps(diff_entry(diff), indent=2) if args.json else "\n".join(format_diff(diff)))
            return 0
        if args.prune:
            needed = runs_in_use(Path(args.results))
            for dataset in stores:
                pruned = prune(Path(args.results) / dataset, args.keep, needed.get(dataset, ()))
                removed = ", ".join(run.id for run in pruned.removed) or "nothing"
                print(f"{dataset}: removed {len(pruned.removed)} run(s) ({removed}), freed {megabytes(pruned.freed)};"
                      f" {pruned.kept} kept")
            return 0
        listed = {}
        for dataset in stores:
            defaults = read_current(Path(args.results) / dataset)["defaults"]
            listed[dataset] = [run_entry(dataset, run, defaults) for run in read_store(Path(args.results) / dataset)]
    except (RunNotFound, PipelineError, OSError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([entry for entries in listed.values() for entry in entries], indent=2))
    else:
        print("\n\n".join("\n".join(format_runs(dataset, entries)) for dataset, entries in listed.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Use the models the mnist-pipeline workflow trained.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict", help="classify images", description="Classify PNG/JPEG images (any size or colour), IDX files and .npy arrays."
    )
    predict.add_argument("model", metavar="MODEL.npz", help="a model file: results/<dataset>/<experiment>/model.npz")
    predict.add_argument("files", metavar="FILE", nargs="+", help="PNG, JPEG (or any image Pillow reads), IDX (.gz or raw) or .npy")
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    predict.add_argument("--top", type=int, default=1, metavar="K", help="show the K most probable classes (default 1)")
    predict.add_argument(
        "--center", choices=CENTER_MODES, default="auto",
        help="re-frame images like the dataset (crop, scale, centre): auto = those not already the model's size (default)",
    )
    predict.set_defaults(run=cmd_predict)

    info = commands.add_parser("info", help="describe a model", description="Architecture, training settings and metrics of a model.")
    info.add_argument("model", metavar="MODEL.npz")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)

    app = commands.add_parser("app", help="open the browser app", description="Serve the Streamlit app on the pipeline's results.")
    app.add_argument(
        "--results", default=os.environ.get(RESULTS_ENV, RESULTS),
        help=f"the workflow's results directory (default: ${RESULTS_ENV} or ./results)",
    )
    app.add_argument(
        "--address", default=DEFAULT_ADDRESS, metavar="ADDR",
        help=f"the address to listen on (default {DEFAULT_ADDRESS}: this machine only; 0.0.0.0 for every network interface)",
    )
    app.add_argument("--port", type=int, default=None, help="port to serve on (default: Streamlit's, 8501)")
    app.add_argument("--headless", action="store_true", help="do not open a browser window")
    app.set_defaults(run=cmd_app)

    runs = commands.add_parser(
        "runs", help="list, compare and prune the kept runs",
        description="Every trained model the workflow kept, newest first; compare two, or remove old ones.",
    )
    runs.add_argument(
        "--results", default=os.environ.get(RESULTS_ENV, RESULTS),
        help=f"the workflow's results directory (default: ${RESULTS_ENV} or ./results)",
    )
    runs.add_argument("--dataset", metavar="NAME", help="only this dataset's runs")
    runs.add_argument("--json", action="store_true", help="print JSON")
    action = runs.add_mutually_exclusive_group()
    action.add_argument(
        "--diff", nargs=2, metavar=("A", "B"),
        help="settings and metrics that differ from run A to run B; each a run id (or 4+ of its first digits), "
             "an experiment name (its current run) or NAME~N (its Nth run before that)",
    )
    action.add_argument(
        "--prune", action="store_true",
        help="remove old runs that no experiment uses now (with --keep). Never removes a run that the config"
             " (config.yaml with experiments.yaml) makes, that the last report or an experiment's folder uses, or"
             " that finished since the last report and is not published yet; refuses, naming the process, while"
             " a snakemake run is going in the workflow folder, and holds off new runs while it removes",
    )
    runs.add_argument("--keep", type=int, metavar="N", help="with --prune: keep the newest N runs per experiment besides its current one")
    runs.set_defaults(run=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader (`| head`) left: say nothing more, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
