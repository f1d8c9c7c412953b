# Cells (statistics over their runs: folds × seeds) and the tables of each suite.


localrules:
    cell,
    table,
    default_table,


# The cell's figures (ordclip/plots.py), in the HTML report of `snakemake ... --report report.html`.
CELL_FIGURE_LABELS = {
    "confusion": "confusion matrix",
    "mae_per_rank": "MAE per rank",
    "pred_vs_true": "predicted vs true",
    "curves": "training curves",
    "prototype_similarity": "prototype similarity",
}


rule cell:
    input:
        cell_inputs,
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
        **job_params("cell"),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "cell", "{dataset}", "{method}"),
    shell:
        ordclip_shell("cell")


rule table:
    input:
        table_inputs,
    output:
        csv=report(
            L.table_file("{suite}", "{name}", "csv"),
            caption="../report/table_csv.rst",
            category="Tables",
            labels={"suite": "{suite}", "table": "{name}.csv"},
        ),
        md=report(
            L.table_file("{suite}", "{name}", "md"),
            caption="../report/table_md.rst",
            category="Tables",
            labels={"suite": "{suite}", "table": "{name}.md"},
        ),
        metrics=L.table_file("{suite}", "{name}", "metrics.json"),
        comparisons=report(
            L.table_file("{suite}", "{name}", "comparisons.csv"),
            caption="../report/table_comparisons.rst",
            category="Tables",
            labels={"suite": "{suite}", "table": "{name}.comparisons.csv"},
        ),
    wildcard_constraints:
        name=L.TABLE_NAME,
    params:
        **job_params("table"),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "table", "{name}"),
    shell:
        ordclip_shell("table")


# results/table1.csv (.md), the user's first target: a copy of the table of the suite named by
# `suite:` (params.yaml, or --config suite=NAME). Each suite's own tables stay under results/<suite>/.
rule default_table:
    input:
        csv=L.table_file(SUITE, "{name}", "csv"),
        md=L.table_file(SUITE, "{name}", "md"),
    output:
        csv=L.default_table("{name}", "csv"),
        md=L.default_table("{name}", "md"),
    wildcard_constraints:
        name="|".join(L.TABLES),
    params:
        suite=SUITE,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file(SUITE, "default_table", "{name}"),
    shell:
        "cp {input.csv} {output.csv} && cp {input.md} {output.md} 2> {log}"
