"""Copy a run's robustness.json to results/{dataset}/{experiment}/, checked and sealed."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])

from mnist_pipeline.fileio import copy_sealed

copy_sealed(snakemake.input[0], snakemake.output[0])
