# mnist-pipeline: download -> parse -> prepare -> train -> evaluate -> report.
# `snakemake --cores 4` builds everything for the configured dataset and experiments;
# see README.md for the stages and workflow/schemas/config.schema.yaml for every key.

import re
from pathlib import Path

from snakemake.utils import min_version

min_version("9.11")


include: "workflow/rules/common.smk"


# Snakemake reads the config files itself, and stops with a traceback on a byte that is not
# UTF-8 or on nesting too deep: checked first, each is one message naming the file
# (docs/configuration-limits.md).
check_config_files("config.yaml", "experiments.yaml")


configfile: "config.yaml"


# Experiments added by the browser app's Train page live in their own file, merged over
# config.yaml as a --configfile would be (a --configfile or --config still wins over both).
if Path("experiments.yaml").is_file():

    configfile: "experiments.yaml"


report: "workflow/report/workflow.rst"


# Stops the run, before any job starts, with a message naming each bad key.
CONFIG = validated_config(config)
EXPERIMENTS = experiments(CONFIG)
# Experiment name -> the run (id, settings, data, code) it needs; see workflow/rules/publish.smk.
RUNS = planned_runs(CONFIG, EXPERIMENTS)


wildcard_constraints:
    dataset=re.escape(CONFIG["dataset"]),
    experiment="|".join(map(re.escape, EXPERIMENTS)),
    run="|".join(sorted({record["run"] for record in RUNS.values()})),


include: "workflow/rules/download.smk"
include: "workflow/rules/parse.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/publish.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/report.smk"


onstart:
    check_writable()
    tell_plan(CONFIG, RUNS)


onsuccess:
    tell_outcome(True, CONFIG, EXPERIMENTS)


onerror:
    tell_outcome(False, CONFIG, EXPERIMENTS)


rule all:
    default_target: True
    input:
        DatasetLayout(RESULTS, CONFIG["dataset"]).final_outputs(EXPERIMENTS),
