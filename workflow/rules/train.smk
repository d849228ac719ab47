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
    # One BLAS thread: measured on 2 cores, a second thread makes one epoch only 1.3x faster,
    # while two 2-thread jobs side by side run 2x slower than two 1-thread jobs (spinning BLAS
    # threads); and a fixed count keeps the model bytes the same whatever --cores is.
    # mem_mb/runtime from the benchmark files: the default MLP peaks at 0.7 GB in 2 minutes,
    # examples/cnn.yaml at 1.1 GB in 8 minutes.
    threads: 1
    resources:
        mem_mb=1600,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/train.py"
