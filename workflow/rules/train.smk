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
    # The cores shared out over the experiments (common.smk): the trainer's worker threads
    # wait without spinning and BLAS runs one thread per call, so jobs side by side never
    # fight over a core, and the weights are the same bytes whatever the thread count.
    # mem_mb/runtime from the benchmark files: the default MLP peaks at 0.7 GB in 2 minutes,
    # examples/cnn.yaml at 1.1 GB in 8 minutes.
    threads: train_threads
    resources:
        mem_mb=1600,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/train.py"
