rule prepare:
    input:
        train_images=DATA.parsed("train-images.npy"),
        train_labels=DATA.parsed("train-labels.npy"),
        test_images=DATA.parsed("test-images.npy"),
        test_labels=DATA.parsed("test-labels.npy"),
        info=DATA.parsed("dataset.json"),
    output:
        train=DATA.prepared("train"),
        val=DATA.prepared("val"),
        test=DATA.prepared("test"),
    params:
        code=stage_code("../scripts/prepare.py"),
        prepare=lambda wildcards: CONFIG["prepare"],
    log:
        DATA.log("prepare"),
    benchmark:
        DATA.benchmark("prepare")
    threads: 1
    resources:
        mem_mb=1024,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prepare.py"
