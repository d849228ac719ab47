rule evaluate:
    input:
        model="results/{dataset}/runs/{run}/model.npz",
        history="results/{dataset}/runs/{run}/history.json",
        test="results/{dataset}/prepared/test.parquet",
        val="results/{dataset}/prepared/val.parquet",
    output:
        metrics="results/{dataset}/runs/{run}/metrics.json",
        predictions="results/{dataset}/runs/{run}/predictions.parquet",
        # Written last: a run folder with run.json is a finished run (mnist_pipeline.runs).
        record="results/{dataset}/runs/{run}/run.json",
    params:
        code=stage_code("../scripts/evaluate.py"),
        run=run_record_of,
    log:
        "results/{dataset}/runs/{run}/evaluate.log",
    benchmark:
        "results/{dataset}/runs/{run}/evaluate.tsv"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/evaluate.py"
