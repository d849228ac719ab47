rule train:
    input:
        train="results/{dataset}/prepared/train.parquet",
        val="results/{dataset}/prepared/val.parquet",
        code=package_code("../scripts/train.py"),
    output:
        model="results/{dataset}/{experiment}/model.npz",
        history=report(
            "results/{dataset}/{experiment}/history.json",
            caption="../report/history.rst",
            category="Training",
            subcategory="{experiment}",
        ),
    params:
        settings=lambda wildcards: EXPERIMENTS[wildcards.experiment],
    log:
        "results/{dataset}/logs/train/{experiment}.log",
    benchmark:
        "results/{dataset}/benchmarks/train/{experiment}.tsv"
    threads: 2
    resources:
        mem_mb=1536,
        runtime=60,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/train.py"
