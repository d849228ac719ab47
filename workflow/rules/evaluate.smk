rule evaluate:
    input:
        model=DATA.run(leaf="model.npz"),
        history=DATA.run(leaf="history.json"),
        test=DATA.prepared("test"),
        val=DATA.prepared("val"),
    output:
        metrics=DATA.run(leaf="metrics.json"),
        predictions=DATA.run(leaf="predictions.parquet"),
        # Written last: a run folder with run.json is a finished run (mnist_pipeline.runstore.store).
        record=DATA.run(leaf="run.json"),
    log:
        DATA.run(leaf="evaluate.log"),
    benchmark:
        DATA.run(leaf="evaluate.tsv")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        code=stage_code("../scripts/evaluate.py"),
        run=run_record_of,
    script:
        "../scripts/evaluate.py"
