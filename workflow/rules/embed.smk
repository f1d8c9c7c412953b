# Frozen towers, computed once: image features of every image, text features of the rank prompts.


rule embed:
    input:
        unpack(embed_inputs),
    output:
        L.features("{suite}", "{dataset}"),
    params:
        **job_params("embed"),
    threads: embed_threads
    resources:
        gpu=embed_gpu,
        cpus_per_gpu=embed_cpus_per_gpu,
        runtime=60,
        mem_mb=embed_mem_mb,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("{suite}", "embed", "{dataset}"),
    benchmark:
        benchmark_file(L.log_file("{suite}", "embed", "{dataset}"))
    shell:
        ordclip_shell("embed")
