"""Start-up cost of every CLI verb: what a job pays before and after its own work.

For each verb of the demo suite (one job each: dataset fading, method ordinalclip, fold 0):

- ``process s``: wall time of a process that does everything ``python -m ordclip VERB --job JSON
  --code HASH`` does except the verb's work: interpreter start, argument parsing, the job's code
  hash check, importing the verb's modules (and, for train, its method's), then leaving the way
  the CLI leaves on success (with ordclip.cli.exit_process where the tree has it, else an ordinary
  exit with the interpreter's teardown);
- ``imports s``: the verb's imports alone, from ``python -X importtime`` (sum of the top-level
  entries), and the three costliest top-level packages;
- train only, ``first step s``: wall time from starting a real ``python -m ordclip train`` (its job
  resolved from the demo's params, data prepared beforehand) to the start of its first training
  step.

Each figure is the median of ``--repeat`` runs. ``--src TREE`` measures another checkout of
ordclip (put first on PYTHONPATH), e.g. the commit before the speed work.

    .venv/bin/python bench/startup.py [--src TREE] [--repeat 3] [--out bench/startup.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the demo on its random backbone: start-up is the same, and no pretraining is needed to measure it
RANDOM = "random_backbone.yaml"
KEYS = {"suite": "demo", "dataset": "fading", "method": "ordinalclip", "fold": 0, "size": 36,
        "backbone": "tiny", "name": "table1"}

# Runs in the measured process: the CLI's work before the verb, then its exit on success.
DRIVER = r"""
import importlib, sys
from ordclip import cli
from ordclip.jobs import VERBS
verb = sys.argv[1]
args = cli.build_parser().parse_args(sys.argv[1:])
job = cli._job(args)
for name in VERBS[verb]["modules"]:
    importlib.import_module(name)
if verb == "train":
    from ordclip.methods import load
    load(job["run"]["method"]["kind"])
if hasattr(cli, "exit_process"):
    cli.exit_process(0)
raise SystemExit(0)
"""

# Runs a real train job and reports when its first training step starts.
FIRST_STEP = r"""
import os, sys, time
t0 = float(sys.argv[1])
import ordclip.train as T
def first_step(*args, **kwargs):
    print(f"FIRST_STEP {time.time() - t0:.3f}", flush=True)
    os._exit(0)
T._train_epoch = first_step
from ordclip.cli import main
main(sys.argv[2:])
"""


def _jobs(src: Path, work: Path, env: dict) -> dict[str, tuple[str, str]]:
    """(job JSON, code hash) of one demo job per verb, resolved by the measured tree."""
    code = r"""
import json, sys
from ordclip.config import load_params
from ordclip.jobs import KEYS, code_hash, job_config, job_json
params = load_params([sys.argv[1], sys.argv[3]])
keys = json.loads(sys.argv[2])
out = {}
for verb in KEYS:
    if verb == "fetch":
        continue
    job = job_config(params, verb, **{k: keys[k] for k in KEYS[verb]})
    out[verb] = (job_json(job), code_hash(verb, job))
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(src / "params.yaml"), json.dumps(KEYS), str(work / RANDOM)],
                          cwd=work, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _imports(verb: str, args: list[str], cwd: Path, env: dict) -> tuple[float, list[tuple[str, float]]]:
    """Seconds of the driver's imports (python -X importtime) and its costliest top-level modules."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", DRIVER, verb, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True)
    top = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if not name[1:].startswith(" "):  # a top-level import: no indentation after the separator's space
            top.append((name.strip(), int(cumulative) / 1e6))
    top.sort(key=lambda t: -t[1])
    return sum(s for _, s in top), top[:3]


def _prepare_data(work: Path, env: dict) -> None:
    """The demo's fading data, split, tiny backbone and features, made by the CLI itself."""
    params = ["--params", "params.yaml", "--params", RANDOM]
    for argv in (["generate", "--dataset", "fading"], ["prepare", "--dataset", "fading", "--size", "36"],
                 ["split", "--suite", "demo", "--dataset", "fading", "--fold", "0"],
                 ["backbone", "--backbone", "tiny"], ["embed", "--suite", "demo", "--dataset", "fading"]):
        subprocess.run([sys.executable, "-m", "ordclip", argv[0], *params, *argv[1:]], cwd=work, env=env,
                       check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT, help="the ordclip checkout to measure (default: this one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    src = args.src.resolve()
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="ordclip-startup-"))
    (work / "params.yaml").write_text((src / "params.yaml").read_text())
    (work / RANDOM).write_text("suites: {demo: {backbone: tiny}}\n")
    jobs = _jobs(src, work, env)
    rows = []
    for verb, (job, code) in jobs.items():
        cli_args = ["--job", job, "--code", code]
        process = statistics.median(_timed([sys.executable, "-c", DRIVER, verb, *cli_args], work, env)
                                    for _ in range(args.repeat))
        imports, top = _imports(verb, cli_args, work, env)
        rows.append((verb, process, imports, top))
    _prepare_data(work, env)
    job, code = jobs["train"]
    first = []
    for _ in range(args.repeat):
        proc = subprocess.run([sys.executable, "-c", FIRST_STEP, repr(time.time()), "train", "--job", job,
                               "--code", code], cwd=work, env=env, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("FIRST_STEP")), None)
        if line is None:
            sys.exit(f"train did not reach its first step:\n{proc.stderr[-3000:]}")
        first.append(float(line.split()[1]))
    lines = [f"tree: {src}; machine: {machine()}; OMP_NUM_THREADS=1; median of {args.repeat}", "",
             "| verb | process s | imports s | costliest imports (s) |", "|---|---|---|---|"]
    for verb, process, imports, top in rows:
        lines.append(f"| {verb} | {process:.2f} | {imports:.2f} | "
                     + ", ".join(f"{n} {s:.2f}" for n, s in top) + " |")
    lines += ["", f"train, to the first training step: {statistics.median(first):.2f} s "
              f"(runs: {', '.join(f'{s:.2f}' for s in first)})"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
