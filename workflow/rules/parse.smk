rule parse:
    input:
        raw=DATA.raw,
    output:
        train_images=DATA.parsed("train-images.npy"),
        train_labels=DATA.parsed("train-labels.npy"),
        test_images=DATA.parsed("test-images.npy"),
        test_labels=DATA.parsed("test-labels.npy"),
        info=DATA.parsed("dataset.json"),
    log:
        DATA.log("parse"),
    benchmark:
        DATA.benchmark("parse")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=256,
        runtime=5,
    params:
        code=stage_code("../scripts/parse.py"),
        dataset=lambda wildcards: CONFIG["dataset"],
        class_names=lambda wildcards: CONFIG["class_names"],
    script:
        "../scripts/parse.py"
