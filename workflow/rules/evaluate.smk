# Metrics of one run from its recorded outputs (validation- and test-selected).


rule evaluate:
    input:
        outputs=L.run_file("{suite}", "{dataset}", "{method}", "{fold}", "outputs.npz"),
        index=prepared_index_of,
    output:
        metrics=L.run_file("{suite}", "{dataset}", "{method}", "{fold}", "metrics.json"),
        predictions=L.run_file("{suite}", "{dataset}", "{method}", "{fold}", "predictions.csv"),
    params:
        cfg=CFG,
        selection=lambda wc: {
            k: run_config(config, wc.suite, wc.dataset, wc.method)["method"][k]
            for k in ("select_on", "report")
        },
    resources:
        runtime=15,
        mem_mb=2000,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "evaluate", "{dataset}", "{method}", "fold{fold}"),
    shell:
        "python -m ordclip evaluate {params.cfg} --suite {wildcards.suite} --dataset {wildcards.dataset} "
        "--method {wildcards.method} --fold {wildcards.fold} > {log} 2>&1"
