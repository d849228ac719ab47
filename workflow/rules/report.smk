localrules:
    report,


rule report:
    input:
        metrics=expand("results/{{dataset}}/{experiment}/metrics.json", experiment=EXPERIMENTS),
        history=expand("results/{{dataset}}/{experiment}/history.json", experiment=EXPERIMENTS),
        predictions=expand("results/{{dataset}}/{experiment}/predictions.parquet", experiment=EXPERIMENTS),
        record=expand("results/{{dataset}}/{experiment}/run.json", experiment=EXPERIMENTS),
        test_images="results/{dataset}/parsed/test-images.npy",
        info="results/{dataset}/parsed/dataset.json",
    output:
        html=report("results/{dataset}/report.html", caption="../report/report_html.rst", category="Report"),
        md=report("results/{dataset}/report.md", caption="../report/report_md.rst", category="Report"),
        figures=report(
            directory("results/{dataset}/figures"),
            patterns=["{experiment}/{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "{figure}"},
        ),
        # The run each experiment uses now, for `mnist-pipeline runs`; the History section reads
        # the other kept runs without declaring them, so that pruning them reruns nothing.
        current="results/{dataset}/runs/current.json",
    params:
        code=stage_code("../scripts/report.py"),
        config=lambda wildcards: CONFIG,
        experiments=lambda wildcards: EXPERIMENTS,
    log:
        "results/{dataset}/logs/report.log",
    benchmark:
        "results/{dataset}/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=512,
        runtime=5,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/report.py"
