rule evaluate:
    input:
        model="results/{dataset}/{experiment}/model.npz",
        history="results/{dataset}/{experiment}/history.json",
        test="results/{dataset}/prepared/test.parquet",
        val="results/{dataset}/prepared/val.parquet",
        code=package_code("../scripts/evaluate.py"),
    output:
        metrics=report(
            "results/{dataset}/{experiment}/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
        ),
        predictions="results/{dataset}/{experiment}/predictions.parquet",
    log:
        "results/{dataset}/logs/evaluate/{experiment}.log",
    benchmark:
        "results/{dataset}/benchmarks/evaluate/{experiment}.tsv"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/evaluate.py"
