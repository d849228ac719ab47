"""Fetch the four IDX files of the configured dataset into results/{dataset}/raw/, verified."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.logs import log_to
from mnist_pipeline.runlock import join_run

log_to(snakemake.log[0])
join_run()

from mnist_pipeline.download import fetch_dataset

settings = snakemake.params["fetch"]
fetch_dataset(
    settings["dataset"],
    settings["source"],
    snakemake.output[0],
    checksums=settings["checksums"],
)
