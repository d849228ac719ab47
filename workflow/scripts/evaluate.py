"""Score one trained model on the test split: metrics.json and per-sample predictions."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from mnist_pipeline.data.tables import read_split, write_table
from mnist_pipeline.evaluation.metrics import predictions_table, score_predictions
from mnist_pipeline.fileio import read_json, write_json
from mnist_pipeline.integrity import verified
from mnist_pipeline.nn.model import load_model

loaded = load_model(verified(snakemake.input["model"]))
test, val = read_split(snakemake.input["test"]), read_split(snakemake.input["val"])
history = read_json(snakemake.input["history"], verify=True)
for split in (test, val):
    split.require_normalization(loaded.normalization, snakemake.input["model"])
test_proba = loaded.model.predict_proba(test.pixels)
metrics = score_predictions(test.labels, test_proba, classes=loaded.classes)
metrics["val_accuracy"] = float((loaded.model.predict_proba(val.pixels).argmax(axis=1) == val.labels).mean())
metrics.update(epochs_run=history["epochs_run"], train_seconds=history["train_seconds"], n_parameters=loaded.model.n_parameters)
write_json(snakemake.output["metrics"], metrics, seal=True)
write_table(predictions_table(test.ids, test.labels, test_proba), snakemake.output["predictions"], seal=True)
write_json(snakemake.output["record"], {**snakemake.params["run"], "finished": history["finished"]}, seal=True)
