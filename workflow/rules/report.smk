localrules:
    report,


rule report:
    input:
        metrics=[DATA.experiment(name, "metrics.json") for name in EXPERIMENTS],
        history=[DATA.experiment(name, "history.json") for name in EXPERIMENTS],
        predictions=[DATA.experiment(name, "predictions.parquet") for name in EXPERIMENTS],
        record=[DATA.experiment(name, "run.json") for name in EXPERIMENTS],
        robustness=robustness_of(EXPERIMENTS),
        test_images=DATA.parsed("test-images.npy"),
        info=DATA.parsed("dataset.json"),
    output:
        html=report(DATA.report("html"), caption="../report/report_html.rst", category="Report"),
        md=report(DATA.report("md"), caption="../report/report_md.rst", category="Report"),
        figures=report(
            directory(DATA.figures),
            patterns=["{experiment}/{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "{figure}"},
        ),
        # The run each experiment uses now, for `mnist-pipeline runs`; the History section reads
        # the other kept runs without declaring them, so that pruning them reruns nothing.
        current=DATA.current,
    log:
        DATA.log("report"),
    benchmark:
        DATA.benchmark("report")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=512,
        runtime=5,
    params:
        code=stage_code("../scripts/report.py"),
        config=lambda wildcards: CONFIG,
        experiments=lambda wildcards: EXPERIMENTS,
    script:
        "../scripts/report.py"
