# A small backbone pretrained inside the pipeline: CLIP's contrastive loss on a synthetic captioned
# corpus (ordclip/pretrain.py, ordclip/data/corpus.py). Its weights file is read like any other
# backbone's; it is rebuilt only when its own parameters (backbones.<name>.weights.pretrain) or code change.

PRETRAINED = [n for n, b in config["backbones"].items() if "pretrain" in b["weights"]]


rule pretrain:
    output:
        weights=L.backbone_weights("{backbone}"),
        log=L.pretrain_file("{backbone}", "log.jsonl"),
        corpus=L.pretrain_file("{backbone}", "corpus.json"),
        samples=report(
            L.pretrain_file("{backbone}", "samples.png"),
            caption="../report/pretrain_samples.rst",
            category="Backbone",
            labels={"backbone": "{backbone}", "figure": "pretraining images and captions"},
        ),
        curve=report(
            L.pretrain_file("{backbone}", "curve.png"),
            caption="../report/pretrain_curve.rst",
            category="Backbone",
            labels={"backbone": "{backbone}", "figure": "pretraining loss and temperature"},
        ),
    wildcard_constraints:
        backbone="|".join(PRETRAINED) or "^$",
    params:
        **job_params("pretrain"),
    threads: 2
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/ordclip.yaml"
    log:
        L.log_file("data", "pretrain", "{backbone}"),
    benchmark:
        benchmark_file(L.log_file("data", "pretrain", "{backbone}"))
    # Its two OpenMP threads wait for each other at every operation of a small model. Spinning while
    # they wait (libgomp's default) takes the cores that other jobs on a shared machine need and
    # slows the job itself by up to 10x there (bench/RESULTS.md, issue 19); passive waiting sleeps.
    # The thread count and so every number stay the same. An OMP_WAIT_POLICY of the user's wins.
    shell:
        f"OMP_WAIT_POLICY=${{{{OMP_WAIT_POLICY:-PASSIVE}}}} {ordclip_shell('pretrain')}"
