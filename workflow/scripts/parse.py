"""Parse and validate the raw IDX files into cached .npy arrays and a dataset description."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.logs import log_to
from mnist_pipeline.runlock import join_run

log_to(snakemake.log[0])
join_run()

from mnist_pipeline.parsed import parse_raw_dataset

parse_raw_dataset(snakemake.input["raw"], snakemake.params["dataset"], dict(snakemake.output.items()), snakemake.params["class_names"])
