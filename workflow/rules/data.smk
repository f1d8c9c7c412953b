# Raw data -> decoded uint8 image cache -> fold splits; backbone weights.


rule generate:
    output:
        directory(L.raw_dir("{dataset}")),
    wildcard_constraints:
        dataset="|".join(GENERATED) or "^$",
    params:
        cfg=CFG,
        dataset=lambda wc: dataset_config(config, wc.dataset),
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "generate", "{dataset}"),
    shell:
        "python -m ordclip generate {params.cfg} --dataset {wildcards.dataset} > {log} 2>&1"


# Downloads run on the submit host (login nodes have internet; compute nodes often do not).
localrules:
    fetch,
    backbone,


rule fetch:
    output:
        directory(L.raw_dir("{dataset}")),
    wildcard_constraints:
        dataset="|".join(FETCHED) or "^$",
    params:
        cfg=CFG,
        dataset=lambda wc: dataset_config(config, wc.dataset),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "fetch", "{dataset}"),
    shell:
        "python -m ordclip fetch {params.cfg} --dataset {wildcards.dataset} > {log} 2>&1"


rule prepare:
    input:
        prepare_input,
    output:
        images=L.prepared_images("{dataset}", "{size}"),
        index=L.prepared_index("{dataset}", "{size}"),
    params:
        cfg=CFG,
        ranks=lambda wc: dataset_config(config, wc.dataset).get("ranks"),
    resources:
        runtime=120,
        mem_mb=prepare_mem_mb,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "prepare", "{dataset}", "{size}"),
    shell:
        "python -m ordclip prepare {params.cfg} --dataset {wildcards.dataset} --size {wildcards.size} > {log} 2>&1"


rule split:
    input:
        prepared_index_of,
    output:
        L.split_file("{suite}", "{dataset}", "{fold}"),
    params:
        cfg=CFG,
        split=lambda wc: split_config(config, wc.suite, wc.dataset),
    resources:
        runtime=10,
        mem_mb=1000,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "split", "{dataset}", "fold{fold}"),
    shell:
        "python -m ordclip split {params.cfg} --suite {wildcards.suite} --dataset {wildcards.dataset} "
        "--fold {wildcards.fold} > {log} 2>&1"


rule backbone:
    output:
        L.backbone_weights("{backbone}"),
    params:
        cfg=CFG,
        backbone=lambda wc: backbone_config(config, wc.backbone),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "backbone", "{backbone}"),
    shell:
        "python -m ordclip backbone {params.cfg} --name {wildcards.backbone} > {log} 2>&1"
