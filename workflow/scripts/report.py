"""Build the accuracy report of every experiment: report.html (self-contained) and report.md."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from pathlib import Path

from mnist_pipeline.data.tables import read_table
from mnist_pipeline.evaluation.report import build_report
from mnist_pipeline.evaluation.report.history import earlier_run_entries
from mnist_pipeline.evaluation.report.provenance import collect_provenance
from mnist_pipeline.fileio import load_array, read_json
from mnist_pipeline.runstore.store import read_store, write_current

config, settings = snakemake.params["config"], snakemake.params["experiments"]
info = read_json(snakemake.input["info"], verify=True)
histories = [read_json(path, verify=True) for path in snakemake.input["history"]]
write_current(snakemake.output["current"], config["train"], {name: read_json(path, verify=True)["run"] for name, path in zip(settings, snakemake.input["record"], strict=False)})
store = read_store(Path(snakemake.output["md"]).parent)
experiments = [
    {"name": name, "settings": settings[name], "metrics": read_json(metrics, verify=True), "history": history["epochs"], "predictions": read_table(predictions)}
    for name, metrics, history, predictions in zip(settings, snakemake.input["metrics"], histories, snakemake.input["predictions"], strict=False)
]
build_report(
    dataset=config["dataset"],
    experiments=experiments,
    defaults=config["train"],
    test_images=load_array(snakemake.input["test_images"]),
    # The run's date is when its last model finished training, so re-rendering gives the same bytes.
    provenance=collect_provenance(config=config, dataset_info=info, date=max(history["finished"] for history in histories)),
    out_html=snakemake.output["html"],
    out_md=snakemake.output["md"],
    figures_dir=snakemake.output["figures"],
    history={name: earlier_run_entries(store, name) for name in settings},
    robustness=list(snakemake.input["robustness"]),
)
