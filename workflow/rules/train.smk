# A run's folder is named by its id, the digest of its settings, prepared data and training
# code (planned_runs): settings trained before find their run here and are not trained again.
# That is also why train, unlike the other stages, has no `code` parameter: the id already
# changes with the code.
rule train:
    input:
        train=DATA.prepared("train"),
        val=DATA.prepared("val"),
    output:
        model=DATA.run(leaf="model.npz"),
        history=DATA.run(leaf="history.json"),
    log:
        log=DATA.run(leaf="train.log"),
        # One JSON record per epoch (mnist_pipeline.workflow.progress), which the app follows. A log,
        # not an output: kept when training fails, never a reason to rerun.
        progress=DATA.progress(),
    benchmark:
        DATA.run(leaf="train.tsv")
    conda:
        "../envs/pipeline.yaml"
    # The cores shared out over the config's runs (common.smk): the trainer's worker threads
    # wait without spinning and BLAS runs one thread per call, so jobs side by side never
    # fight over a core, and the weights are the same bytes whatever the thread count.
    # mem_mb/runtime from the benchmark files: the default MLP peaks at 0.7 GB in 2 minutes,
    # examples/cnn.yaml at 1.1 GB in 8 minutes.
    threads: train_threads
    resources:
        mem_mb=1600,
        runtime=30,
    params:
        settings=lambda wildcards: run_record_of(wildcards)["settings"],
    script:
        "../scripts/train.py"
