localrules:
    publish,


# Makes an experiment's current run visible at the paths README names: a copy of the run's files
# into results/{dataset}/{experiment}/. Going back to settings trained before reruns only this
# (the set of input files changed) and the report.
rule publish:
    input:
        unpack(current_run_files),
    output:
        model="results/{dataset}/{experiment}/model.npz",
        history=report(
            "results/{dataset}/{experiment}/history.json",
            caption="../report/history.rst",
            category="Training",
            subcategory="{experiment}",
        ),
        metrics=report(
            "results/{dataset}/{experiment}/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
        ),
        predictions="results/{dataset}/{experiment}/predictions.parquet",
        record="results/{dataset}/{experiment}/run.json",
    params:
        code=stage_code("../scripts/publish.py"),
    log:
        "results/{dataset}/logs/publish/{experiment}.log",
    benchmark:
        "results/{dataset}/benchmarks/publish/{experiment}.tsv"
    threads: 1
    resources:
        mem_mb=64,
        runtime=2,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/publish.py"
