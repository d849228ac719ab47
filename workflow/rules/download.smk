localrules:
    download,
    keep_download,


# Two jobs, because Snakemake deletes a job's outputs right before it runs the job: the one
# that fetches writes to a staging folder of its own, and raw/ is replaced only by
# keep_download, which never starts when the fetch failed. So a mirror that is down or a file
# with a bad checksum leaves the verified raw/ and everything after it as it was. The staging
# folder is named by what it fetches: Snakemake records even a failed job's params, and a
# shared name would make a failed fetch from another source count as a change later.
rule download:
    input:
        source=local_source_files,
    output:
        temp(directory(staging_dir(CONFIG))),
    log:
        DATA.log("download"),
    benchmark:
        DATA.benchmark("download")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=128,
        runtime=10,
    params:
        code=stage_code("../scripts/download.py"),
        fetch=lambda wildcards: fetch_settings(CONFIG),
    script:
        "../scripts/download.py"


# A rename. A change of `source` (or `checksums`) names another staging folder, so it reruns
# this job, which needs that download, and through raw/ everything after it.
rule keep_download:
    input:
        fetched=staging_dir(CONFIG),
    output:
        directory(DATA.raw),
    log:
        DATA.log("keep_download"),
    benchmark:
        DATA.benchmark("keep_download")
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=64,
        runtime=1,
    params:
        code=stage_code("../scripts/keep_download.py"),
    script:
        "../scripts/keep_download.py"
