localrules:
    publish,


# Makes an experiment's current run visible at the paths README names: a copy of the run's files
# into results/{dataset}/{experiment}/. Going back to settings trained before reruns only this
# (the set of input files changed) and the report.
rule publish:
    input:
        unpack(current_run_files),
    output:
        model=DATA.experiment(leaf="model.npz"),
        history=report(
            DATA.experiment(leaf="history.json"),
            caption="../report/history.rst",
            category="Training",
            subcategory="{experiment}",
        ),
        metrics=report(
            DATA.experiment(leaf="metrics.json"),
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
        ),
        predictions=DATA.experiment(leaf="predictions.parquet"),
        record=DATA.experiment(leaf="run.json"),
    log:
        DATA.log("publish/{experiment}"),
    benchmark:
        DATA.benchmark("publish/{experiment}")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=64,
        runtime=2,
    params:
        code=stage_code("../scripts/publish.py"),
    script:
        "../scripts/publish.py"
