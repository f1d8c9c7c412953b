# Raw data -> decoded uint8 image cache -> fold splits; backbone weights.


rule generate:
    output:
        directory(L.raw_dir("{dataset}")),
    wildcard_constraints:
        dataset="|".join(GENERATED) or "^$",
    params:
        **job_params("generate"),
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "generate", "{dataset}"),
    benchmark:
        benchmark_file(L.log_file("data", "generate", "{dataset}"))
    shell:
        ordclip_shell("generate")


# Downloads run on the submit host (login nodes have internet; compute nodes often do not); a split
# takes seconds (it reads the index and writes one CSV), less than an sbatch job waits in the queue.
localrules:
    fetch,
    backbone,
    split,


rule fetch:
    output:
        directory(L.raw_dir("{dataset}")),
    wildcard_constraints:
        dataset="|".join(FETCHED) or "^$",
    params:
        **job_params("fetch"),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "fetch", "{dataset}"),
    shell:
        ordclip_shell("fetch")


rule prepare:
    input:
        prepare_input,
    output:
        images=L.prepared_images("{dataset}", "{size}"),
        index=L.prepared_index("{dataset}", "{size}"),
    params:
        **job_params("prepare"),
    resources:
        runtime=120,
        mem_mb=prepare_mem_mb,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "prepare", "{dataset}", "{size}"),
    benchmark:
        benchmark_file(L.log_file("data", "prepare", "{dataset}", "{size}"))
    shell:
        ordclip_shell("prepare")


rule split:
    input:
        prepared_index_of,
    output:
        L.split_file("{suite}", "{dataset}", "{fold}"),
    params:
        **job_params("split"),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "split", "{dataset}", "fold{fold}"),
    shell:
        ordclip_shell("split")


rule backbone:
    output:
        L.backbone_weights("{backbone}"),
    wildcard_constraints:  # pretrained backbones are written by rule pretrain (workflow/rules/pretrain.smk)
        backbone="|".join(n for n, b in config["backbones"].items() if "pretrain" not in b["weights"]) or "^$",
    params:
        **job_params("backbone"),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "backbone", "{backbone}"),
    shell:
        ordclip_shell("backbone")
