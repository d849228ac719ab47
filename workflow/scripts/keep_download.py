"""Put the verified files of a finished download in place as results/{dataset}/raw/."""

import sys

# This checkout's package, whatever other copy is installed (see use_checkout_package in common.smk).
sys.path.insert(0, f"{snakemake.scriptdir}/../../src")

from mnist_pipeline.logs import log_to
from mnist_pipeline.runlock import join_run

log_to(snakemake.log[0])
join_run()

from mnist_pipeline.download import keep_download

keep_download(snakemake.input["fetched"], snakemake.output[0])
