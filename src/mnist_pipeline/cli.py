"""The `mnist-pipeline` command: classify images with a trained model, describe a model, open the app.

    mnist-pipeline predict MODEL.npz FILE... [--json] [--top K] [--center auto|always|never]
    mnist-pipeline info MODEL.npz [--json]
    mnist-pipeline app [--results DIR] [--port N] [--headless]

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

from mnist_pipeline.app import RESULTS_ENV
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import read_json
from mnist_pipeline.nn.model import load_model
from mnist_pipeline.preprocess import CENTER_MODES, framing_for, load_images, model_inputs

PROG = "mnist-pipeline"
APP_SCRIPT = Path(__file__).parent / "app" / "streamlit_app.py"


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
            inputs.append(load_images(path, framing, center))
        except PipelineError as exc:
            inputs.append(str(exc))  # our messages name the file already
        except OSError as exc:
            inputs.append(f"{path}: cannot read it ({exc.strerror or exc})")
    batches = [item.images for item in inputs if not isinstance(item, str)]
    proba = loaded.model.predict_proba(model_inputs(np.concatenate(batches), loaded.normalization)) if batches else None
    records, row = [], 0
    for path, item in zip(paths, inputs):
        if isinstance(item, str):
            records.append({"file": os.fspath(path), "index": None, "label": None, "class": None, "probability": None, "error": item})
            continue
        for index in range(len(item.images)):
            ranked = top_classes(proba[row], loaded.classes, top)
            row += 1
            best = ranked[0]
            records.append({"file": item.path, "index": index if item.indexed else None, **best, "top": ranked})
    return records


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


def describe_layer(spec: dict[str, Any]) -> str:
    """A short name for one layer spec of a model's architecture."""
    kind = spec["type"]
    if kind == "dense":
        return f"dense {spec['n_in']}->{spec['n_out']}"
    if kind == "conv2d":
        return f"conv{spec['kernel_size']}x{spec['kernel_size']} {spec['in_channels']}->{spec['out_channels']}"
    if kind == "dropout":
        return f"dropout {spec['rate']:g}"
    if kind == "reshape":
        return "reshape " + "x".join(map(str, spec["shape"]))
    return kind.replace("_", " ")


def model_info(path: str, loaded) -> dict[str, Any]:
    """What `info` reports: the model file's header, and metrics.json/history.json beside it if present."""
    directory = Path(path).parent
    found = {name: read_json(directory / f"{name}.json") for name in ("metrics", "history") if (directory / f"{name}.json").is_file()}
    history = found.get("history", {})
    return {
        "model": os.fspath(path),
        "dataset": loaded.metadata.get("dataset"),
        "experiment": loaded.metadata.get("experiment"),
        "classes": list(loaded.classes),
        "architecture": loaded.model.architecture,
        "n_parameters": loaded.model.n_parameters,
        "normalization": loaded.normalization,
        "settings": loaded.metadata.get("settings"),
        "epochs_run": loaded.metadata.get("epochs_run"),
        "best_epoch": loaded.metadata.get("best_epoch"),
        "threads": loaded.metadata.get("threads"),
        "train_seconds": history.get("train_seconds"),
        "metrics": found.get("metrics"),
    }


def format_info(info: dict[str, Any]) -> str:
    arch = info["architecture"]
    lines = [
        f"model:        {info['model']}",
        f"dataset:      {info['dataset']}  experiment: {info['experiment']}",
        f"classes:      {', '.join(info['classes'])}",
        f"architecture: {arch.get('model', '?')}, {arch['n_inputs']} inputs -> {arch['n_classes']} classes,"
        f" {info['n_parameters']:,} parameters",
        "  " + ", ".join(describe_layer(spec) for spec in arch["layers"]),
        f"normalization: mean {info['normalization'].get('mean')}, std {info['normalization'].get('std')} (of pixel/255)",
        f"training:     epochs run {info['epochs_run']}, weights of epoch {info['best_epoch']}"
        + (f", {info['train_seconds']:.1f} s" if info["train_seconds"] is not None else "")
        + (f" on {info['threads']} threads" if info["threads"] is not None else ""),
    ]
    lines += [f"  {key}: {value}" for key, value in sorted((info["settings"] or {}).items())]
    metrics = info["metrics"]
    if metrics is None:
        lines.append("metrics:      none found (no metrics.json beside the model)")
    else:
        lines.append(f"metrics:      test accuracy {metrics['test_accuracy']:.2%}, validation accuracy {metrics['val_accuracy']:.2%}")
        per_class = metrics.get("per_class") or {}
        # metrics.json sorts its keys; the classes' own order is the one people know.
        for name in (name for name in info["classes"] if name in per_class):
            scores = per_class[name]
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


def streamlit_command(results: str | os.PathLike, port: int | None = None, headless: bool = False) -> list[str]:
    """The `streamlit run` command line that serves the app on `results`."""
    command = [sys.executable, "-m", "streamlit", "run", os.fspath(APP_SCRIPT), "--browser.gatherUsageStats", "false"]
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
    command = streamlit_command(args.results, args.port, args.headless)
    # Become the server rather than wrap it: Ctrl-C and a service manager's SIGTERM then reach
    # Streamlit itself, and no orphaned server outlives a killed launcher.
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


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
        help="re-frame images like the dataset (crop, scale, centre): auto = those not already 28x28 (default)",
    )
    predict.set_defaults(run=cmd_predict)

    info = commands.add_parser("info", help="describe a model", description="Architecture, training settings and metrics of a model.")
    info.add_argument("model", metavar="MODEL.npz")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)

    app = commands.add_parser("app", help="open the browser app", description="Serve the Streamlit app on the pipeline's results.")
    app.add_argument(
        "--results", default=os.environ.get(RESULTS_ENV, "results"),
        help=f"the workflow's results directory (default: ${RESULTS_ENV} or ./results)",
    )
    app.add_argument("--port", type=int, default=None, help="port to serve on (default: Streamlit's, 8501)")
    app.add_argument("--headless", action="store_true", help="do not open a browser window")
    app.set_defaults(run=cmd_app)
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
