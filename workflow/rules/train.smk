# One run = (suite, dataset, method, fold, seed): train or fit, checkpoint, resume. {run} is the
# run's folder name, fold<k> or fold<k>-seed<j> (ordclip.layout.run_name).


rule train:
    input:
        unpack(train_inputs),
    output:
        **{
            name.split(".")[0]: L.run_path("{suite}", "{dataset}", "{method}", "{run}", name)
            for name in L.RUN_TRAIN_FILES
        },
    params:
        **job_params("train"),
    threads: train_threads
    resources:
        gpu=train_gpu,
        cpus_per_gpu=train_cpus_per_gpu,
        runtime=train_runtime,
        mem_mb=train_mem_mb,
        slurm_extra=TRAIN_SLURM_EXTRA,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "train", "{dataset}", "{method}", "{run}"),
    benchmark:
        benchmark_file(L.log_file("{suite}", "train", "{dataset}", "{method}", "{run}"))
    shell:
        ordclip_shell("train")
