# How each run's model holds up on corrupted copies of the test split (mnist_pipeline.evaluation.robustness),
# beside its metrics. Not part of the run id: changing `robustness` rescores, it never retrains.
# mem_mb/runtime from the benchmark files: the default MLP scores 2,000 images x 17 families x 3
# severities in about 7 s at 190 MB; examples/cnn.yaml's network costs about 6.6 times as much.
rule robustness:
    input:
        model=DATA.run(leaf="model.npz"),
        test_images=DATA.parsed("test-images.npy"),
        test_labels=DATA.parsed("test-labels.npy"),
    output:
        DATA.run(leaf="robustness.json"),
    log:
        DATA.run(leaf="robustness.log"),
    benchmark:
        DATA.run(leaf="robustness.tsv")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=400,
        runtime=15,
    params:
        code=stage_code("../scripts/robustness.py"),
        robustness=lambda wildcards: CONFIG["robustness"],
    script:
        "../scripts/robustness.py"


localrules:
    publish_robustness,


# Its own copy rule, beside publish: with `robustness: null` no run has the file to copy.
rule publish_robustness:
    input:
        current_run_robustness,
    output:
        report(
            DATA.experiment(leaf="robustness.json"),
            caption="../report/robustness.rst",
            category="Evaluation",
            subcategory="{experiment}",
        ),
    log:
        DATA.log("publish_robustness/{experiment}"),
    benchmark:
        DATA.benchmark("publish_robustness/{experiment}")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=64,
        runtime=2,
    params:
        code=stage_code("../scripts/publish_robustness.py"),
    script:
        "../scripts/publish_robustness.py"
