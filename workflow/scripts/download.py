"""Fetch the four IDX files of the configured dataset into results/{dataset}/raw/, verified."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from mnist_pipeline.data.download import fetch_dataset

settings = snakemake.params["fetch"]
fetch_dataset(
    settings["dataset"],
    settings["source"],
    snakemake.output[0],
    checksums=settings["checksums"],
)
