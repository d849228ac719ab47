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
    log:
        DATA.log("prepare"),
    benchmark:
        DATA.benchmark("prepare")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=5,
    params:
        code=stage_code("../scripts/prepare.py"),
        prepare=lambda wildcards: CONFIG["prepare"],
    script:
        "../scripts/prepare.py"
