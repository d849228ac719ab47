"""Train one experiment's network on the prepared splits; save the model and its history."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import echo_to_terminal, log_to

log_to(snakemake.log["log"])
join_as_job()
# One line per epoch on the terminal too: training is the stage that takes minutes. The run id
# leads it (the run start lists the experiments of each run: see tell_plan in common.smk).
echo_to_terminal("mnist_pipeline.nn.train", prefix=f"train run {snakemake.wildcards['run']}: ")

from datetime import UTC, datetime

from mnist_pipeline.data.tables import read_split
from mnist_pipeline.fileio import seal, write_json
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.nn.model import save_model
from mnist_pipeline.workflow.progress import EpochRecords

train, val = read_split(snakemake.input["train"]), read_split(snakemake.input["val"])
settings, meta = TrainSettings.from_dict(snakemake.params["settings"]), train.metadata
result = fit(settings, train.pixels, train.labels, val.pixels, val.labels, n_classes=len(meta["classes"]),
             image_shape=train.image_shape, threads=snakemake.threads, on_epoch=EpochRecords(snakemake.log["progress"]))
# Timings stay out of the model file, so that the same config and seed give the same weights;
# the thread count is recorded, though it changes only the speed.
save_model(
    snakemake.output["model"],
    result.model,
    normalization=meta["normalization"],
    classes=meta["classes"],
    metadata={"dataset": meta["dataset"], "run": snakemake.wildcards["run"], "settings": settings.as_dict(),
              "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "threads": snakemake.threads},
)
seal(snakemake.output["model"])
write_json(
    snakemake.output["history"],
    {"epochs": result.history, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
     "finished": datetime.now(UTC).isoformat(timespec="seconds")},
    seal=True,
)
