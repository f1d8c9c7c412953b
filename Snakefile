# ordclip: CLIP-based ordinal regression, from data to table. See README.md.
from snakemake.utils import min_version

min_version("9.19")

import os

from snakemake.exceptions import WorkflowError
from ordclip.config import ConfigError, check_yaml_files
from ordclip.dvcstages import DvcCommitError, recover

try:  # a YAML error named by file and line (Snakemake's own message names neither)
    check_yaml_files(["params.yaml"])
except ConfigError as exc:
    raise WorkflowError(str(exc))


configfile: "params.yaml"


if workflow.is_main_process:  # a DVC record a kill interrupted is completed first (ordclip/dvcstages.py)
    try:
        recover(".")
    except DvcCommitError as exc:
        raise WorkflowError(str(exc))


# With `--sdm apptainer --apptainer-args "--nv"`, every job runs in this image, built from
# containers/ordclip.def (README, "Environment"); without --sdm apptainer it is not used.
container: "containers/ordclip.sif"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        L.default_table("table1", "csv"),
        L.default_table("table1", "md"),


onsuccess:
    # Runs in the submit host's Snakemake process only (cluster jobs get --no-hooks): record every
    # job of this run's DAG in dvc.yaml and dvc.lock (ordclip/dvcstages.py), for any suite.
    from ordclip.dvcstages import record, snakemake_jobs

    extra = [os.path.relpath(f) for f in workflow.config_settings.configfiles]
    record(snakemake_jobs(workflow.dag.jobs), ".", ["params.yaml", *extra], dict(workflow.config_settings.config))
