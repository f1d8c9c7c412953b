# Cells (mean ± std over folds) and the table of the active suite.


localrules:
    cell,
    table,
    table2,
    table3,


rule cell:
    input:
        lambda wc: [
            L.run_file(wc.suite, wc.dataset, wc.method, k, "metrics.json")
            for k in range(n_folds(config, wc.suite, wc.dataset))
        ],
    output:
        L.cell_file("{suite}", "{dataset}", "{method}"),
    params:
        cfg=CFG,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "cell", "{dataset}", "{method}"),
    shell:
        "python -m ordclip cell {params.cfg} --suite {wildcards.suite} --dataset {wildcards.dataset} "
        "--method {wildcards.method} > {log} 2>&1"


rule table:
    input:
        table1_cells(SUITE),
    output:
        csv=L.TABLE1_CSV,
        md=L.TABLE1_MD,
    params:
        cfg=CFG,
        suite=SUITE,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file(SUITE, "table", "table1"),
    shell:
        "python -m ordclip table {params.cfg} --suite {params.suite} --name table1 > {log} 2>&1"


rule table2:
    input:
        lambda wc: table_cells(SUITE, "table2"),
    output:
        csv=L.table_file("table2", "csv"),
        md=L.table_file("table2", "md"),
    params:
        cfg=CFG,
        suite=SUITE,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file(SUITE, "table", "table2"),
    shell:
        "python -m ordclip table {params.cfg} --suite {params.suite} --name table2 > {log} 2>&1"


rule table3:
    input:
        lambda wc: table_cells(SUITE, "table3"),
    output:
        csv=L.table_file("table3", "csv"),
        md=L.table_file("table3", "md"),
    params:
        cfg=CFG,
        suite=SUITE,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file(SUITE, "table", "table3"),
    shell:
        "python -m ordclip table {params.cfg} --suite {params.suite} --name table3 > {log} 2>&1"
