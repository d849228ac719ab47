# Helpers shared by the rule files (config validation, the package code each stage runs);
# functions only, never a rule, as the snakemake-workflows catalog keeps them.

from pathlib import Path

from snakemake.exceptions import WorkflowError

import mnist_pipeline
from mnist_pipeline.codedeps import package_modules_used
from mnist_pipeline.config import experiment_settings, load_schema, resolve_config
from mnist_pipeline.datasets import IDX_STEMS
from mnist_pipeline.download import local_source_dir, locate_idx
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn.parallel import available_cores, share_cores

SCHEMA = load_schema(workflow.source_path("../schemas/config.schema.yaml"))
PACKAGE = Path(mnist_pipeline.__file__).parent


def validated_config(config):
    try:
        return resolve_config(config, SCHEMA)
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


def experiments(config):
    return experiment_settings(config, SCHEMA)


def package_code(script):
    """The package modules `script` imports, as inputs: Snakemake does not track imported
    code, so listing it is what makes an edit to a module rerun the stages that use it."""
    return [str(path) for path in package_modules_used(workflow.source_path(script), PACKAGE)]


def train_threads(wildcards):
    """One experiment gets all of --cores (at most the machine's); a sweep's experiments share
    them. Without --cores (a cluster run), the cores of the machine Snakemake runs on."""
    try:
        cores = min(workflow.cores, available_cores())
    except WorkflowError:  # no --cores given
        cores = available_cores()
    names = list(EXPERIMENTS)
    return share_cores(cores, len(names), names.index(wildcards.experiment))


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


def final_outputs(config, experiments):
    base = f"results/{config['dataset']}"
    per_experiment = [f"{base}/{name}/{leaf}" for name in experiments for leaf in ("model.npz", "metrics.json")]
    return per_experiment + [f"{base}/report.html", f"{base}/report.md"]

