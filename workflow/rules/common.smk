# Helpers shared by the rule files (config validation, the package code each stage runs);
# functions only, never a rule, as the snakemake-workflows catalog keeps them.

import hashlib
import json
import os
import sys
import time
from functools import cache
from pathlib import Path

from snakemake.exceptions import WorkflowError


def use_checkout_package(src):
    """Make `import mnist_pipeline` load the package in this checkout's src/, whatever other
    copy is installed (another clone's editable install, a stale `pip install .`), and refuse
    to go on, naming both, if another copy is already loaded. Each job's script puts the same
    src/ first on its own path (snakemake.scriptdir/../../src), which works under --sdm conda
    too, where Snakemake clears PYTHONPATH; MNIST_PIPELINE_SRC makes the package itself refuse
    to load from anywhere else in this run and its jobs (mnist_pipeline/__init__.py)."""
    src = Path(src).resolve()
    loaded = sys.modules.get("mnist_pipeline")
    if loaded is not None and Path(loaded.__file__).resolve().parent != src / "mnist_pipeline":
        raise WorkflowError(
            f"this workflow runs the package of its own checkout, {src / 'mnist_pipeline'}, but this"
            f" Python has already loaded another copy from {Path(loaded.__file__).parent}. Run snakemake"
            " in a fresh process (the `snakemake` command, or python -m snakemake)."
        )
    # Set for this run and its jobs, not read from the user: no `envvars:` to declare.
    os.environ.update(MNIST_PIPELINE_SRC=str(src))
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))


use_checkout_package(Path(workflow.basedir) / "src")

import mnist_pipeline
from mnist_pipeline.workflow.codedeps import code_identity
from mnist_pipeline.workflow.config import experiment_settings, load_schema, load_yaml, resolve_config
from mnist_pipeline.workflow.datafacts import check_config_against_data
from mnist_pipeline.errors import PipelineError, RunInProgressError
from mnist_pipeline.layout import RESULTS, DatasetLayout
from mnist_pipeline.nn.parallel import available_cores, share_cores
from mnist_pipeline.workflow.progress import write_plan
from mnist_pipeline.workflow.plan import planned_runs as runs_of, source_files
from mnist_pipeline.locks import claim_workdir
from mnist_pipeline.runstore.store import is_trained, run_files
from mnist_pipeline.workflow.terminal import failure_text, flip_warning_text, summary_text, training_plan_text
from mnist_pipeline.workflow.writecheck import unwritable, unwritable_text

# Every output's path, as a pattern with the {dataset} wildcard (mnist_pipeline.layout).
DATA = DatasetLayout(RESULTS)
# A stage log written since then is from this run (see tell_outcome).
RUN_STARTED = time.time()
SCHEMA = load_schema(workflow.source_path("../schemas/config.schema.yaml"))
PACKAGE = Path(mnist_pipeline.__file__).parent


def claim_for_execution():
    """One executing run at a time in this directory, starting clean after a killed one
    (mnist_pipeline/locks.py). Snakemake parses this file alike for a run and for -n, --lint, --dag, --summary
    or --report, which must work beside a running run; only while it builds the job graph of a
    run that executes jobs (an executor, not a dry run) does it tell them apart, so the claim
    is made then, from an input function, before Snakemake checks its locks. Only in the main
    process: a cluster job parses this file again, inside the run that holds the claim."""
    if not workflow.is_main_process or workflow.executor_plugin is None or workflow.dryrun:
        return
    try:
        claimed_now = claim_workdir(".snakemake", RESULTS)
    except RunInProgressError as error:
        # Snakemake reads a WorkflowError from an input function as "this job cannot be made"
        # and may go on without it; SystemExit stops the process before any job, as intended.
        raise SystemExit(f"Error: {error}") from None
    if claimed_now:
        # No run is alive, so Snakemake's locks are a dead run's: clear them as --unlock does.
        # That removes the locks folder, which Snakemake makes only when it starts, so it is
        # made again for this run's own locks (tests/test_workflow.py pins both).
        workflow.persistence.cleanup_locks()
        Path(workflow.persistence.path, "locks").mkdir(exist_ok=True)


def check_config_files(*paths):
    """Stop, naming the file, before Snakemake reads a config file that is not UTF-8 or not
    YAML, or nests or repeats beyond config.load_yaml's bounds: Snakemake's own reading stops
    with a traceback that does not name it. A missing file is Snakemake's to report."""
    for path in paths:
        if Path(path).is_file():
            _before_any_job(load_yaml, path)


def check_writable():
    """Stop the run before its first job when a folder its jobs write in refuses
    (mnist_pipeline.workflow.writecheck): Snakemake would stop at that job with a PermissionError
    traceback of its own, after the jobs before it. Called by onstart, which Snakemake calls
    only for a run with jobs to execute: a run with nothing to do never asks."""
    targets = [
        (job.rule.name, path)
        for job in workflow.dag.needrun_jobs()
        for path in (*job.output, *job.log, *([job.benchmark] if job.benchmark else []))
    ]
    problems = unwritable(targets)
    if problems:
        print(unwritable_text(problems), end="", file=sys.stderr, flush=True)
        raise SystemExit(1)


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


@cache
def stage_code(script):
    """The digest of what `script` and the package modules it imports do (codedeps.py), the
    `code` parameter of the stage that runs it. A change to that code reruns the stage; a comment,
    a docstring, a reformat or a move of the checkout does not. Computed once per Snakemake run."""
    return code_identity(workflow.source_path(script), PACKAGE)


def planned_runs(config, experiments):
    """Experiment name -> the record of the run its settings make (mnist_pipeline.workflow.plan): the
    run id is fixed here, from the settings, the prepared data's making and the training
    code, so that settings trained before point at the run folder that already holds them."""
    return runs_of(config, experiments, lambda stage: stage_code(f"../scripts/{stage}.py"))


# Threads of each train job under a cluster executor (SLURM): a job asks for what it needs, and
# the cores of the node Snakemake runs on say nothing about a compute node. Four because the
# part of an epoch that stays on one thread (about a fifth of the default recipe's, measured in
# docs/parallel-training.md) bounds the speed-up at about 2.5x on 4 cores and 3.3x on 8: past
# four, cores are mostly wasted. `--set-threads train=N` asks for N.
CLUSTER_TRAIN_THREADS = 4


def train_threads(wildcards):
    """On this machine: the cores --cores gives (at most the machine's) shared out over the
    config's runs still to train (one per distinct experiment settings): a lone experiment gets
    them all, a sweep's share them, and runs trained before take none. A retrain of a trained
    run (--forcerun) shares them with every run. Under a cluster executor, CLUSTER_TRAIN_THREADS
    per job, and inside the job, the cores the cluster gave it."""
    if not workflow.local_exec:
        return CLUSTER_TRAIN_THREADS
    if not workflow.is_main_process:
        return available_cores()
    try:
        cores = min(workflow.cores, available_cores())
    except WorkflowError:  # no --cores given: Snakemake's default, one core
        cores = 1
    runs = sorted({record["run"] for record in RUNS.values()})
    dataset_dir = DatasetLayout(RESULTS, CONFIG["dataset"]).root
    untrained = [run for run in runs if not is_trained(dataset_dir, run)]
    sharing = untrained if wildcards.run in untrained else runs
    return share_cores(cores, len(sharing), sharing.index(wildcards.run))


def run_record_of(wildcards):
    """The record of the run a train or evaluate job makes, found by its run id (one of
    RUNS: the `run` wildcard allows no other)."""
    return next(record for record in RUNS.values() if record["run"] == wildcards.run)


def current_run_files(wildcards):
    """The files of the run an experiment's settings make, for publish to copy."""
    return run_files(DatasetLayout(RESULTS, wildcards.dataset).root, RUNS[wildcards.experiment]["run"])


def current_run_robustness(wildcards):
    """The robustness scores of the run an experiment's settings make, for publish_robustness."""
    return DatasetLayout(RESULTS, wildcards.dataset).run(RUNS[wildcards.experiment]["run"], "robustness.json")


def robustness_of(experiments):
    """The published robustness scores of every experiment, in their order, for the report;
    none when the config turns the stage off (`robustness: null`)."""
    return [DATA.experiment(name, "robustness.json") for name in experiments] if CONFIG["robustness"] else []


def local_source_files(wildcards):
    """The download's input: the files of a local `source` (source_files). Every job graph
    reaches the download job, so this is also where a run that executes jobs claims the
    working directory (claim_for_execution)."""
    claim_for_execution()
    return source_files(CONFIG)


def fetch_settings(config):
    """What the download job fetches."""
    return {key: config[key] for key in ("checksums", "dataset", "source")}


def staging_dir(config):
    """The download's own output folder, named by a digest of what it fetches."""
    digest = hashlib.sha256(json.dumps(fetch_settings(config), sort_keys=True).encode()).hexdigest()
    return DATA.staging(digest[:16])


def tell_plan(config, runs):
    """At the start of a run, which experiments each run still to be trained serves: said at
    the terminal, so that the epoch lines (led by the run id) can be read, and written as a
    record for the app (mnist_pipeline.workflow.progress)."""
    layout = DatasetLayout(RESULTS, config["dataset"])
    text = flip_warning_text(config["dataset"], runs) + training_plan_text(layout.root, runs)
    print(text, end="", file=sys.stderr, flush=True)
    untrained = {record["run"] for record in runs.values() if not is_trained(layout.root, record["run"])}
    write_plan(layout.planned, runs, untrained)


def tell_outcome(succeeded, config, experiments):
    """The end of the run at the terminal: the best experiments and the report, or why each
    stage that failed in this run failed, in the package's own words."""
    if succeeded:
        text = summary_text(RESULTS, config["dataset"], experiments)
    else:
        # Stage logs sit under logs/, a run's train and evaluate logs in its runs/ folder.
        text = failure_text(DatasetLayout(RESULTS, config["dataset"]).root, since=RUN_STARTED)
    print(text, end="", file=sys.stderr, flush=True)
