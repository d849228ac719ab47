"""Put the verified files of a finished download in place as results/{dataset}/raw/."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.locks import join_as_job
from mnist_pipeline.workflow.logs import log_to

log_to(snakemake.log[0])
join_as_job()

from mnist_pipeline.data.download import keep_download

keep_download(snakemake.input["fetched"], snakemake.output[0])
