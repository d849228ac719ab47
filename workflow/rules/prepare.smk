rule prepare:
    input:
        train_images="results/{dataset}/parsed/train-images.npy",
        train_labels="results/{dataset}/parsed/train-labels.npy",
        test_images="results/{dataset}/parsed/test-images.npy",
        test_labels="results/{dataset}/parsed/test-labels.npy",
        info="results/{dataset}/parsed/dataset.json",
    output:
        train="results/{dataset}/prepared/train.parquet",
        val="results/{dataset}/prepared/val.parquet",
        test="results/{dataset}/prepared/test.parquet",
    params:
        code=stage_code("../scripts/prepare.py"),
        prepare=lambda wildcards: CONFIG["prepare"],
    log:
        "results/{dataset}/logs/prepare.log",
    benchmark:
        "results/{dataset}/benchmarks/prepare.tsv"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prepare.py"
