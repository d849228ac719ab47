"""Split off a stratified validation set, normalize with training statistics, write Parquet."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from mnist_pipeline.data.parsed import load_parsed
from mnist_pipeline.data.splits import prepare_splits

settings = snakemake.params["prepare"]
prepare_splits(
    load_parsed(snakemake.input),
    val_fraction=settings["val_fraction"],
    seed=settings["seed"],
    outputs={split: snakemake.output[split] for split in ("train", "val", "test")},
)
