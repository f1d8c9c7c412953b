"""The SLURM path as a site runs it: a tiny suite through `snakemake --profile SITE
--workflow-profile slurm` (the site's own profile, made from profiles/slurm/site-template.yaml
outside the repository, and the workflow's profiles/slurm/) on a real single-node Slurm that this
module starts (one fake GPU, a CPU and a GPU partition), with a training job signalled as at
preemption that resumes on its retry.

Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge (.ci/run installs
them); skipped otherwise. The cluster has no accounting database, hence `--slurm-status-command
squeue` with MinJobAge=600 (see README, "Running on SLURM").
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml


pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]

SLURM_CONF = """\
ClusterName=ordclip-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The node announces 64 GB whatever the machine has (memory is not enforced here), so that the
# rules' own mem_mb requests are submitted unchanged.
SlurmdParameters=config_overrides
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""
GRES_CONF = """\
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
"""
TINY = """
datasets:
  fading: {per_rank: 30}
suites:
  demo:
    backbone: tiny          # the random backbone: no pretraining in this test
    datasets: [fading]
    methods: [zeroshot, coop]
    folds: 2
    checkpoint_minutes: 0   # resume.pt after every epoch: the test preempts coop once it has one
    overrides:
      coop: {epochs: 40, batch_size: 8}
"""
TIMEOUT_S = 900


def _pid(path: Path, timeout: float = 20) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.1)
    raise RuntimeError(f"{path} did not appear within {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int) -> None:
    """SIGTERM to ``pid`` (a daemon this module started), SIGKILL if it is still there after 15 s."""
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _squeue(fmt: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--states=all", "--noheader", f"--format={fmt}"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node Slurm (partitions cpu and gpu on the one node, 1 fake GPU) run by munged, slurmctld and slurmd started
    here; stopped by pid at the end, and /etc/slurm restored to what it was."""
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged") if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): "
                    "apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    etc = Path("/etc/slurm")
    etc.mkdir(exist_ok=True)
    written = {etc / "slurm.conf": SLURM_CONF.format(d=d, cpus=os.cpu_count()), etc / "gres.conf": GRES_CONF}
    backups = {}
    for path, text in written.items():
        if path.exists():
            backups[path] = d / f"{path.name}.orig"
            shutil.copy2(path, backups[path])
        path.write_text(text)
    started: list[int] = []
    made: list[Path] = []
    try:
        munge_pid = Path("/run/munge/munged.pid")
        if not (munge_pid.is_file() and _alive(int(munge_pid.read_text()))):
            for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
                if not Path(folder).exists():
                    Path(folder).mkdir(parents=True)
                    made.append(Path(folder))
                shutil.chown(folder, "munge", "munge")
            key = Path("/etc/munge/munge.key")
            if not key.exists():
                subprocess.run(["mungekey", "--create"], check=True)
                shutil.chown(key, "munge", "munge")
                made.append(key)
            munge_pid.unlink(missing_ok=True)
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
            started.append(_pid(munge_pid))
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
        started.append(_pid(d / "slurmctld.pid"))
        subprocess.run(["/usr/sbin/slurmd", "-N", "localhost"], check=True)
        started.append(_pid(d / "slurmd.pid"))
        deadline = time.time() + 60
        while "idle" not in subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True,
                                           text=True).stdout:
            if time.time() > deadline:
                logs = "".join((d / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log") if (d / f).exists())
                raise RuntimeError(f"the test cluster did not become idle within 60 s:\n{logs}")
            time.sleep(0.5)
        yield d
    finally:
        if started:
            jobs = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True).stdout
            if jobs.split():
                subprocess.run(["scancel", *jobs.split()], capture_output=True)
        for pid in reversed(started):
            _stop(pid)
        for path in written:
            path.unlink(missing_ok=True)
        for path, backup in backups.items():
            shutil.copy2(backup, path)
        for path in reversed(made):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _site_profile(folder: Path) -> Path:
    """The site template as a site fills it in for this cluster: its partitions (cpu, gpu with one
    GPU) and no account; the account line goes, as the template says where none is needed."""
    folder.mkdir()
    site = (ROOT / "profiles/slurm/site-template.yaml").read_text()
    site = site.replace("default-resources:\n  slurm_account: CHANGEME_account", "")
    site = site.replace("# slurm-no-account: true", "slurm-no-account: true")
    # this cluster has no accounting database (README: without accounting, squeue and MinJobAge)
    site = site.replace("# slurm-status-command: squeue", "slurm-status-command: squeue")
    # The suite runs on the CPU, but coop's train jobs ask for the node's fake GPU, so that the GPU
    # path of the submission (--gpus, --cpus-per-gpu, the GPU partition) is what runs for them.
    site += ("set-resources:\n  train:\n    gpu: \"1 if wildcards.method == 'coop' else 0\"\n"
             "    cpus_per_gpu: \"1 if wildcards.method == 'coop' else 0\"\n")
    (folder / "profile.yaml").write_text(site)
    parts = yaml.safe_load((ROOT / "profiles/slurm/partitions-template.yaml").read_text())["partitions"]
    parts = {"cpu": parts["CHANGEME_cpu"], "gpu": {**parts["CHANGEME_gpu"], "max_gpu": 1}}
    (folder / "partitions.yaml").write_text(yaml.safe_dump({"partitions": parts}))
    for name in ("profile.yaml", "partitions.yaml"):
        assert not re.search(r"^[^#]*CHANGEME", (folder / name).read_text(), re.M), name
    return folder


def _train_job_of(method: str, fold: int) -> tuple[int, str]:
    """(pid, SLURM job id) of the `python -m ordclip train --job JSON` process of that run."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode() for a in argv]
        if "ordclip" not in words or "train" not in words or "--job" not in words:
            continue
        job = json.loads(words[words.index("--job") + 1])
        if job["run"]["method"]["name"] == method and job["fold"] == fold:
            for var in env:
                if var.startswith(b"SLURM_JOB_ID="):
                    return int(proc.name), var.split(b"=", 1)[1].decode()
    raise LookupError(f"no running train process of {method} fold {fold}")


def test_tiny_suite_through_slurm_with_a_preempted_run(slurm_cluster, repo_copy, tmp_path_factory):
    t0 = time.time()
    (repo_copy / "tiny.yaml").write_text(TINY)
    shutil.copytree(ROOT / "profiles", repo_copy / "profiles")
    # The working directory is a git repository; the run must leave it clean (site values live outside).
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *git], cwd=repo_copy, check=True)
    site = _site_profile(tmp_path_factory.mktemp("site") / "mysite")
    cmd = [sys.executable, "-m", "snakemake", "results/table1.csv", "--configfile", "tiny.yaml",
           "--profile", str(site), "--workflow-profile", "slurm",
           "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = repo_copy / "snakemake.out"
    run_dir = repo_copy / "results/demo/runs/fading/coop/fold0"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=repo_copy, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        # Preemption: once coop fold 0 has checkpointed an epoch, SIGTERM its job's processes as
        # SLURM does at preemption or the time limit (scancel --signal=TERM, like sbatch --signal).
        while not (run_dir / "resume.pt").exists():
            assert proc.poll() is None, log.read_text()[-5000:]
            assert time.time() - t0 < TIMEOUT_S, "coop fold 0 never checkpointed:\n" + log.read_text()[-5000:]
            time.sleep(0.1)
        _, preempted = _train_job_of("coop", 0)
        subprocess.run(["scancel", "--signal=TERM", preempted], check=True)
        proc.wait(timeout=TIMEOUT_S - (time.time() - t0))
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    output = log.read_text()
    assert proc.returncode == 0, output[-5000:]
    seconds = time.time() - t0

    table = pd.read_csv(repo_copy / "results/table1.csv")
    rows = table[table.metric == "mae"]
    assert set(rows.method) == {"zeroshot", "coop"} and set(rows.dataset) == {"fading"}
    assert (table.n_folds == 2).all() and rows["mean"].notna().all()

    # Every job outside the localrules (split and evaluate run on the submit host) ran as a SLURM
    # job, in the partition that fits it; the preempted one failed and its retry resumed from the
    # checkpoint.
    jobs = {job_id: (state, comment) for job_id, state, comment, _ in _squeue("%i|%T|%k|%P")}
    partitions = {job_id: part for job_id, _, _, part in _squeue("%i|%T|%k|%P")}
    rules = [c.split("_wildcards")[0].removeprefix("rule_") for _, c in jobs.values()]
    assert sorted(rules) == sorted(["generate", "prepare", "embed"] + ["train"] * 5), jobs
    assert jobs[preempted][0] == "FAILED", jobs
    assert sorted(s for s, _ in jobs.values()) == ["COMPLETED"] * 7 + ["FAILED"], jobs
    for job_id, (_, comment) in jobs.items():
        assert partitions[job_id] == ("gpu" if "_coop_" in comment else "cpu"), (comment, partitions[job_id])
    train_log = (repo_copy / "logs/demo/train/fading/coop/fold0.log").read_text()
    assert "resuming from" in train_log and "epoch 40/40" in train_log, train_log[-3000:]
    # The job shell waited for training to checkpoint, and passed on its status (128 + SIGTERM).
    slurm_log = (repo_copy / f"logs/slurm/rule_train/demo_fading_coop_fold0/{preempted}.log").read_text()
    assert "returned non-zero exit status 143" in slurm_log, slurm_log[-3000:]

    # The train jobs got the node's GPU, and their runs record the SLURM job and the device.
    for fold in (0, 1):
        run = json.loads((repo_copy / f"results/demo/runs/fading/coop/fold{fold}/run.json").read_text())
        assert run["job"]["slurm_job_id"] in jobs and run["job"]["cuda_visible_devices"] == "0", run["job"]
        assert jobs[run["job"]["slurm_job_id"]] == ("COMPLETED", f"rule_train_wildcards_demo_fading_coop_fold{fold}")
        job = subprocess.run(["scontrol", "show", "job", run["job"]["slurm_job_id"]], capture_output=True,
                             text=True, check=True).stdout
        assert "TresPerJob=gres:gpu:1" in job and "CpusPerTres=gres:gpu:1" in job, job  # --gpus, --cpus-per-gpu
        assert run["workdir_git"]["dirty"] is False, run["workdir_git"]
    zeroshot = json.loads((repo_copy / "results/demo/runs/fading/zeroshot/fold0/run.json").read_text())
    job = subprocess.run(["scontrol", "show", "job", zeroshot["job"]["slurm_job_id"]], capture_output=True,
                         text=True, check=True).stdout
    assert "gres:gpu" not in job, job  # a CPU-only run asks for no GPU, of no model
    # Each sbatch job measured its time and peak memory (Snakemake's benchmark:).
    bench = (repo_copy / "benchmarks/demo/train/fading/coop/fold1.tsv").read_text().splitlines()
    assert bench[0].split("\t")[:3] == ["s", "h:m:s", "max_rss"] and len(bench) == 2, bench
    assert not subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_copy,
                              capture_output=True, text=True, check=True).stdout
    print(f"SLURM tiny suite: {len(jobs)} SLURM jobs, {seconds:.1f} s")
