# Helpers shared by the rule files (config validation, the package code each stage runs);
# functions only, never a rule, as the snakemake-workflows catalog keeps them.

import hashlib
import json
import sys
import time
from functools import cache
from pathlib import Path

from snakemake.exceptions import WorkflowError

import mnist_pipeline
from mnist_pipeline.codedeps import package_modules_used
from mnist_pipeline.config import experiment_settings, load_schema, resolve_config
from mnist_pipeline.datafacts import check_config_against_data
from mnist_pipeline.datasets import IDX_STEMS
from mnist_pipeline.sources import local_source_dir, locate_idx
from mnist_pipeline.errors import PipelineError, RunInProgressError
from mnist_pipeline.nn.parallel import available_cores, share_cores
from mnist_pipeline.runid import code_digest, data_identity, run_record
from mnist_pipeline.runlock import claim_workdir
from mnist_pipeline.runs import is_trained, run_files
from mnist_pipeline.terminal import failure_text, flip_warning_text, summary_text, training_plan_text

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
    """The resolved config; a WorkflowError, before any job, for a bad key or value, including
    the ones the data rules out (conv blocks vs image size, validation split vs class counts)."""
    resolved = _before_any_job(lambda: resolve_config(config, SCHEMA, results_dir=RESULTS))
    _before_any_job(lambda: check_config_against_data(resolved, experiments(resolved)))
    return resolved


def experiments(config):
    """Experiment name -> its training settings as a canonical dict (the train rule's params),
    every one checked as a TrainSettings before any job starts."""
    return _before_any_job(experiment_settings, config, SCHEMA)


def _before_any_job(check, *args):
    """Stop the run with the error's message alone: it names the key or file, a traceback would bury it."""
    try:
        return check(*args)
    except PipelineError as error:
        raise WorkflowError(str(error)) from None


def package_code(script):
    """The package modules `script` imports, as inputs: Snakemake does not track imported
    code, so listing it is what makes an edit to a module rerun the stages that use it."""
    return [str(path) for path in modules_used(script)]


@cache
def modules_used(script):
    # Read once per run of Snakemake: both the rule inputs and the run ids need them.
    return tuple(package_modules_used(workflow.source_path(script), PACKAGE))


def code_files(script):
    """The script and the package modules it imports, labelled by where they sit in the
    checkout, so that a copy of the workflow elsewhere gives the same code digest."""
    path = Path(workflow.source_path(script))
    files = {f"workflow/scripts/{path.name}": path}
    files.update({f"mnist_pipeline/{module.relative_to(PACKAGE).as_posix()}": module for module in modules_used(script)})
    return files


def planned_runs(config, experiments):
    """Experiment name -> the record of the run its settings make (mnist_pipeline.runid): the
    run id is fixed here, from the settings, the prepared data's making and the training
    code, so that settings trained before point at the run folder that already holds them."""
    upstream = {}
    for script in ("../scripts/download.py", "../scripts/parse.py", "../scripts/prepare.py"):
        upstream.update(code_files(script))
    data = data_identity(
        dataset=config["dataset"], prepare=config["prepare"], code=code_digest(upstream), source=config["source"],
        checksums=config["checksums"], source_files=local_source_files(None),
    )
    code = code_digest(code_files("../scripts/train.py"))
    return {name: run_record(settings, data, code) for name, settings in experiments.items()}


def train_threads(wildcards):
    """The cores --cores gives (at most the machine's) shared out over the config's runs still
    to train (one per distinct experiment settings): a lone experiment gets them all, a sweep's
    share them, and runs trained before take none. A retrain of a trained run (--forcerun)
    shares them with every run. Without --cores (a cluster run), the cores of the machine
    Snakemake runs on."""
    try:
        cores = min(workflow.cores, available_cores())
    except WorkflowError:  # no --cores given
        cores = available_cores()
    runs = sorted({record["run"] for record in RUNS.values()})
    dataset_dir = f"{RESULTS}/{CONFIG['dataset']}"
    untrained = [run for run in runs if not is_trained(dataset_dir, run)]
    sharing = untrained if wildcards.run in untrained else runs
    return share_cores(cores, len(sharing), sharing.index(wildcards.run))


def run_record_of(wildcards):
    """The record of the run a train or evaluate job makes, found by its run id (one of
    RUNS: the `run` wildcard allows no other)."""
    return next(record for record in RUNS.values() if record["run"] == wildcards.run)


def current_run_files(wildcards):
    """The files of the run an experiment's settings make, for publish to copy."""
    return run_files(f"{RESULTS}/{wildcards.dataset}", RUNS[wildcards.experiment]["run"])


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


def tell_plan(config, runs):
    """At the start of a run, which experiments each run still to be trained serves, so that
    the epoch lines (led by the run id) can be read."""
    text = flip_warning_text(config["dataset"], runs) + training_plan_text(f"{RESULTS}/{config['dataset']}", runs)
    print(text, end="", file=sys.stderr, flush=True)


def tell_outcome(succeeded, config, experiments):
    """The end of the run at the terminal: the best experiments and the report, or why each
    stage that failed in this run failed, in the package's own words."""
    if succeeded:
        text = summary_text(RESULTS, config["dataset"], experiments)
    else:
        # Stage logs sit under logs/, a run's train and evaluate logs in its runs/ folder.
        text = failure_text(f"{RESULTS}/{config['dataset']}", since=RUN_STARTED)
    print(text, end="", file=sys.stderr, flush=True)
