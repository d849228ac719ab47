"""Copy an experiment's current run to results/{dataset}/{experiment}/ and note the name in the run."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.logs import log_to

log_to(snakemake.log[0])

from mnist_pipeline.runs import RUN_FILES, publish

publish({key: snakemake.input[key] for key in RUN_FILES}, {key: snakemake.output[key] for key in RUN_FILES}, snakemake.wildcards["experiment"])
