"""Copy an experiment's current run to results/{dataset}/{experiment}/ and note the name in the run."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])

from mnist_pipeline.fileio import seal
from mnist_pipeline.integrity import verified
from mnist_pipeline.layout import RUN_FILES
from mnist_pipeline.runstore.store import publish

# A run's files are checked before they are copied, and each copy is sealed for the report.
outputs = {key: snakemake.output[key] for key in RUN_FILES}
publish({key: verified(snakemake.input[key]) for key in RUN_FILES}, outputs, snakemake.wildcards["experiment"])
for path in outputs.values():
    seal(path)
