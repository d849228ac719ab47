# Helpers shared by the rule files (config validation, the package code each stage runs);
# functions only, never a rule, as the snakemake-workflows catalog keeps them.

import hashlib
import json
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError

import mnist_pipeline
from mnist_pipeline.codedeps import package_modules_used
from mnist_pipeline.config import experiment_settings, load_schema, resolve_config
from mnist_pipeline.datasets import IDX_STEMS
from mnist_pipeline.download import local_source_dir, locate_idx
from mnist_pipeline.errors import ConfigError, RunInProgressError
from mnist_pipeline.runlock import claim_workdir
from mnist_pipeline.terminal import failure_text, summary_text

# Where every output goes; the rules spell it out in their paths.
RESULTS = "results"
# A stage log written since then is from this run (see tell_outcome).
RUN_STARTED = time.time()
SCHEMA = load_schema(workflow.source_path("../schemas/config.schema.yaml"))
PACKAGE = Path(mnist_pipeline.__file__).parent


def claim_working_directory():
    """One run at a time here, starting clean after a killed one (see runlock.py). Only in the
    main process: a cluster job parses this file again, inside the run that holds the lock."""
    if not workflow.is_main_process:
        return
    try:
        claim_workdir(".snakemake", RESULTS, dry_run=workflow.output_settings.dryrun)
    except RunInProgressError as error:
        raise WorkflowError(str(error)) from None


def validated_config(config):
    try:
        return resolve_config(config, SCHEMA, results_dir=RESULTS)
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


def experiments(config):
    return experiment_settings(config, SCHEMA)


def package_code(script):
    """The package modules `script` imports, as inputs: Snakemake does not track imported
    code, so listing it is what makes an edit to a module rerun the stages that use it."""
    return [str(path) for path in package_modules_used(workflow.source_path(script), PACKAGE)]


def local_source_files(wildcards):
    """The files a local `source` directory gives the download (the same ones it picks), so
    that replacing them reruns it. A missing one is left for the download job to report."""
    directory = local_source_dir(CONFIG["dataset"], CONFIG["source"])
    if directory is None or not directory.is_dir():
        return []
    files = []
    for stem in IDX_STEMS:
        try:
            files.append(str(locate_idx(directory, stem)))
        except FileNotFoundError:
            pass
    return files


def fetch_settings(config):
    """What the download job fetches."""
    return {key: config[key] for key in ("checksums", "dataset", "source")}


def staging_dir(config):
    """The download's own output folder, named by a digest of what it fetches."""
    digest = hashlib.sha256(json.dumps(fetch_settings(config), sort_keys=True).encode()).hexdigest()
    return f"{RESULTS}/{{dataset}}/.download/{digest[:16]}"


def final_outputs(config, experiments):
    base = f"{RESULTS}/{config['dataset']}"
    per_experiment = [f"{base}/{name}/{leaf}" for name in experiments for leaf in ("model.npz", "metrics.json")]
    return per_experiment + [f"{base}/report.html", f"{base}/report.md"]


def tell_outcome(succeeded, config, experiments):
    """The end of the run at the terminal: the best experiments and the report, or why each
    stage that failed in this run failed, in the package's own words."""
    if succeeded:
        text = summary_text(RESULTS, config["dataset"], experiments)
    else:
        text = failure_text(f"{RESULTS}/{config['dataset']}/logs", since=RUN_STARTED)
    print(text, end="", file=sys.stderr, flush=True)
