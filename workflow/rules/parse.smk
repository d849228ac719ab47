rule parse:
    input:
        raw="results/{dataset}/raw",
    output:
        train_images="results/{dataset}/parsed/train-images.npy",
        train_labels="results/{dataset}/parsed/train-labels.npy",
        test_images="results/{dataset}/parsed/test-images.npy",
        test_labels="results/{dataset}/parsed/test-labels.npy",
        info="results/{dataset}/parsed/dataset.json",
    params:
        code=stage_code("../scripts/parse.py"),
        dataset=lambda wildcards: CONFIG["dataset"],
        class_names=lambda wildcards: CONFIG["class_names"],
    log:
        "results/{dataset}/logs/parse.log",
    benchmark:
        "results/{dataset}/benchmarks/parse.tsv"
    threads: 1
    resources:
        mem_mb=256,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/parse.py"
