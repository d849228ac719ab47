"""Parse and validate the raw IDX files into cached .npy arrays and a dataset description."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from mnist_pipeline.data.parsed import parse_raw_dataset

parse_raw_dataset(snakemake.input["raw"], snakemake.params["dataset"], dict(snakemake.output.items()), snakemake.params["class_names"])
