"""Score one trained model on corrupted copies of the test split: robustness.json."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from threadpoolctl import threadpool_limits

from mnist_pipeline.evaluation.robustness import score_robustness_files

settings = snakemake.params["robustness"]
# The scores are the same bytes at any thread count; the job's threads bound BLAS.
with threadpool_limits(snakemake.threads):
    score_robustness_files(snakemake.input["model"], snakemake.input["test_images"], snakemake.input["test_labels"],
                           snakemake.output[0], families=settings["families"], severities=settings["severities"],
                           seed=settings["seed"], limit=settings["limit"])
