localrules:
    download,


rule download:
    input:
        source=local_source_files,
        code=package_code("../scripts/download.py"),
    output:
        directory("results/{dataset}/raw"),
    params:
        fetch=lambda wildcards: {key: CONFIG[key] for key in ("checksums", "dataset", "source")},
    log:
        "results/{dataset}/logs/download.log",
    benchmark:
        "results/{dataset}/benchmarks/download.tsv"
    threads: 1
    resources:
        mem_mb=128,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/download.py"
