# Metrics of one run from its recorded outputs (validation- and test-selected). It reads small files
# and takes seconds, so it runs on the submit host (a localrule) rather than as an sbatch job.


localrules:
    evaluate,


rule evaluate:
    input:
        outputs=L.run_path("{suite}", "{dataset}", "{method}", "{run}", "outputs.npz"),
        log=L.run_path("{suite}", "{dataset}", "{method}", "{run}", "log.jsonl"),
        index=prepared_index_of,
    output:
        **{
            name.split(".")[0]: L.run_path("{suite}", "{dataset}", "{method}", "{run}", name)
            for name in L.RUN_EVAL_FILES
        },
    params:
        **job_params("evaluate"),
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "evaluate", "{dataset}", "{method}", "{run}"),
    shell:
        ordclip_shell("evaluate")
