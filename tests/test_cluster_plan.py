"""The paper suite as a SLURM site would submit it, planned without a cluster: how many sbatch jobs,
which ask for a GPU, which partition each goes to, and that the site's settings stay outside the
repository (profiles/slurm/)."""

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _localrules() -> set[str]:
    rules = set()
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for block in re.findall(r"^localrules:\n((?:    \w+,\n)+)", smk.read_text(), re.M):
            rules.update(re.findall(r"\w+", block))
    return rules


def _site_profile(folder: Path) -> Path:
    """The site template with its CHANGEME values filled in, outside the repository."""
    folder.mkdir()
    site = (ROOT / "profiles/slurm/site-template.yaml").read_text().replace("CHANGEME_account", "myaccount")
    (folder / "profile.yaml").write_text(site)
    parts = (ROOT / "profiles/slurm/partitions-template.yaml").read_text()
    (folder / "partitions.yaml").write_text(parts.replace("CHANGEME_cpu", "cpu").replace("CHANGEME_gpu", "gpu"))
    for name in ("profile.yaml", "partitions.yaml"):
        assert not re.search(r"^[^#]*CHANGEME", (folder / name).read_text(), re.M), name
    return folder


def _dry_run_jobs(tmp_path: Path, *config: str) -> list[dict]:
    """Each job of `snakemake -n results/table1.csv CONFIG` through the site and workflow profiles:
    rule, wildcards and resources as Snakemake prints them. --forceall: every job of the DAG, whatever
    the checkout has built already (e.g. the demo's data after `make table1`)."""
    site = _site_profile(tmp_path / "mysite")
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "results/table1.csv", *config,
                          "--profile",
                          str(site), "--workflow-profile", "slurm"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert "workflow specific profile profiles/slurm" in out.stderr + out.stdout
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out.stdout):
        m = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if not m:
            continue
        job = {"rule": m.group(1)}
        for key in ("wildcards", "resources", "benchmark"):
            line = re.search(rf"^    {key}: (.*)$", block, re.M)
            job[key] = line.group(1) if line else ""
        jobs.append(job)
    return jobs


def test_paper_suite_sbatch_jobs(tmp_path):
    jobs = _dry_run_jobs(tmp_path, "--config", "suite=paper")
    per_rule = Counter(j["rule"] for j in jobs)
    local = _localrules()
    assert {"split", "evaluate", "cell", "table", "default_table", "fetch", "backbone"} <= local
    sbatch = {rule: n for rule, n in per_rule.items() if rule not in local}
    # 7 datasets (morph2, adience, hci, 4 aesthetics categories); 40 folds over them; 7 methods.
    assert per_rule["evaluate"] == per_rule["train"] == 280 and per_rule["split"] == 40
    assert sbatch == {"prepare": 7, "embed": 7, "train": 280}, sbatch
    print(f"paper suite: {sum(per_rule.values())} jobs, {sum(sbatch.values())} sbatch jobs: {sbatch}")

    for job in jobs:
        res = job["resources"]
        assert "slurm_partition" not in res and "gpu_model" not in res, job  # the site's partitions.yaml decides
        if job["rule"] != "train":
            continue
        assert "slurm_extra='--signal=TERM@120'" in res, job
        assert job["benchmark"].startswith("benchmarks/paper/train/"), job
        method = re.search(r"method=(\w+)", job["wildcards"]).group(1)
        gpu = re.search(r"\bgpu=(\d+)", res).group(1)
        assert gpu == ("0" if method in ("zeroshot", "linear_probe") else "1"), job
    # SLURM job arrays (--slurm-array-jobs) stay off: the plugin (2.8) submits an array with its first
    # job's resources, and one rule's train jobs differ (README, "Running on SLURM")
    train = {re.sub(r"\b(tmpdir|slurm_account)=\S+", "", j["resources"]) for j in jobs if j["rule"] == "train"}
    assert len(train) > 1
    assert "slurm-array-jobs" not in (ROOT / "profiles/slurm/profile.yaml").read_text()


class _Job:
    """What the SLURM plugin's partition choice reads of a job."""

    def __init__(self, name, threads, **resources):
        self.name, self.threads = name, threads
        self.resources = _Resources(resources)

    def is_group(self):
        return False


class _Resources(dict):
    def __getattr__(self, key):
        return self[key]


def test_partition_template_sends_cpu_runs_to_the_cpu_partition(tmp_path):
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    class Log:
        def __getattr__(self, _):
            return lambda *a, **k: None

    site = _site_profile(tmp_path / "mysite")
    partitions = read_partition_file(site / "partitions.yaml")
    cases = {  # resources as the dry run above prints them
        "gpu": _Job("train", 4, gpu=1, cpus_per_gpu=4, runtime=720, mem_mb=32000),
        "cpu": _Job("train", 1, gpu=0, cpus_per_gpu=0, runtime=120, mem_mb=4000),
    }
    for expected, job in cases.items():
        assert get_best_partition(partitions, job, Log()) == expected
    prepare = _Job("prepare", 1, runtime=120, mem_mb=8000)
    assert get_best_partition(partitions, prepare, Log()) == "cpu"


def test_site_settings_are_not_in_the_repository():
    workflow_profile = yaml.safe_load((ROOT / "profiles/slurm/profile.yaml").read_text())
    # keys of the workflow profile win over the site's: it must not hold the site's keys
    assert not {"default-resources", "set-resources", "slurm-partition-config"} & set(workflow_profile)
    assert "CHANGEME" not in (ROOT / "profiles/slurm/profile.yaml").read_text()
    assert not (ROOT / "workflow/profiles").exists()  # Snakemake would not find it by name
    default = yaml.safe_load((ROOT / "profiles/default/profile.yaml").read_text())
    assert default["show-failed-logs"] is True


def test_smoke_config_plans_the_gpu_and_cpu_paths(tmp_path):
    """config/smoke.yaml: a small table through the same rules, with GPU and CPU-only train jobs."""
    jobs = _dry_run_jobs(tmp_path, "--configfile", "config/smoke.yaml")
    per_rule = Counter(j["rule"] for j in jobs)
    assert per_rule["train"] == 6 and per_rule["embed"] == 1 and sum(per_rule.values()) == 23, per_rule
    gpus = {re.search(r"method=(\w+), run=fold(\d)\b", j["wildcards"]).groups(): re.search(r"\bgpu=(\d+)", j["resources"]).group(1)
            for j in jobs if j["rule"] == "train"}
    assert gpus == {(m, f): "1" if m == "coop" else "0" for m in ("zeroshot", "linear_probe", "coop") for f in "01"}
    embed = next(j for j in jobs if j["rule"] == "embed")
    assert re.search(r"\bgpu=1\b", embed["resources"]), embed
