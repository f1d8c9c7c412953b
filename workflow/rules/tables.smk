# Cells (mean ± std over folds) and the table of the active suite.


localrules:
    cell,
    table,
    table2,
    table3,


# The cell's figures (ordclip/plots.py), in the HTML report of `snakemake ... --report report.html`.
CELL_FIGURE_LABELS = {
    "confusion": "confusion matrix",
    "mae_per_rank": "MAE per rank",
    "pred_vs_true": "predicted vs true",
    "curves": "training curves",
}


rule cell:
    input:
        lambda wc: [
            L.run_file(wc.suite, wc.dataset, wc.method, k, name)
            for k in range(n_folds(config, wc.suite, wc.dataset))
            for name in ("metrics.json", "predictions.csv", "log.jsonl")
        ],
    output:
        cell=L.cell_file("{suite}", "{dataset}", "{method}"),
        **{
            name: report(
                L.cell_figure("{suite}", "{dataset}", "{method}", name),
                caption=f"../report/{name}.rst",
                category="Cells",
                subcategory="{dataset}",
                labels={"method": "{method}", "figure": CELL_FIGURE_LABELS[name]},
            )
            for name in L.CELL_FIGURES
        },
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
        table_cells(SUITE, "table1"),
    output:
        csv=report(L.TABLE1_CSV, caption="../report/table1.rst", category="Tables", labels={"table": "table1.csv"}),
        md=report(L.TABLE1_MD, caption="../report/table1_md.rst", category="Tables", labels={"table": "table1.md"}),
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
