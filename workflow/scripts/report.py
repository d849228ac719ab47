"""Build the accuracy report of every experiment: report.html (self-contained) and report.md."""

from mnist_pipeline.logs import log_to
from mnist_pipeline.runlock import join_run

log_to(snakemake.log[0])
join_run()

import numpy as np
import pyarrow.parquet as pq

from mnist_pipeline.fileio import read_json
from mnist_pipeline.report import build_report
from mnist_pipeline.report.provenance import collect_provenance

config, settings = snakemake.params["config"], snakemake.params["experiments"]
info = read_json(snakemake.input["info"])
histories = [read_json(path) for path in snakemake.input["history"]]
experiments = [
    {"name": name, "settings": settings[name], "metrics": read_json(metrics), "history": history["epochs"], "predictions": pq.read_table(predictions)}
    for name, metrics, history, predictions in zip(settings, snakemake.input["metrics"], histories, snakemake.input["predictions"])
]
build_report(
    dataset=config["dataset"],
    experiments=experiments,
    defaults=config["train"],
    test_images=np.load(snakemake.input["test_images"], mmap_mode="r"),
    # The run's date is when its last model finished training, so re-rendering gives the same bytes.
    provenance=collect_provenance(config=config, dataset_info=info, date=max(history["finished"] for history in histories)),
    out_html=snakemake.output["html"],
    out_md=snakemake.output["md"],
    figures_dir=snakemake.output["figures"],
)
