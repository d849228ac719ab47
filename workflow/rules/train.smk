# A run's folder is named by its id, the digest of its settings, prepared data and training
# code (planned_runs): settings trained before find their run here and are not trained again.
# That is also why the package modules train imports are not inputs, as they are for the other
# stages: the id already changes with them, and a module edited and put back (newer, same
# content) must not retrain a kept run.
rule train:
    input:
        train="results/{dataset}/prepared/train.parquet",
        val="results/{dataset}/prepared/val.parquet",
    output:
        model="results/{dataset}/runs/{run}/model.npz",
        history="results/{dataset}/runs/{run}/history.json",
    params:
        settings=lambda wildcards: run_record_of(wildcards)["settings"],
    log:
        "results/{dataset}/runs/{run}/train.log",
    benchmark:
        "results/{dataset}/runs/{run}/train.tsv"
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
