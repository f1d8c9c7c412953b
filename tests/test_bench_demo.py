"""bench/demo_suite.py's accounting: the per-rule times it reads from Snakemake's log, and the
CPU time of the Snakemake process itself."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import demo_suite  # noqa: E402

LOG = """\
Select jobs to execute...
Execute 2 jobs...
[Thu Dec  3 14:21:59 2026]
localrule generate:
    output: data/raw/blur
    jobid: 103
    wildcards: dataset=blur
[Thu Dec  3 14:21:59 2026]
localrule generate:
    output: data/raw/fading
    jobid: 55
[Thu Dec  3 14:22:01 2026]
Finished jobid: 103 (Rule: generate)
[Thu Dec  3 14:22:02 2026]
Finished jobid: 55 (Rule: generate)
[Thu Dec  3 14:22:03 2026]
localrule pretrain:
    jobid: 7
[Thu Dec  3 14:23:03 2026]
Finished jobid: 7 (Rule: pretrain)
[Thu Dec  3 14:23:03 2026]
rule train:
    jobid: 9
"""


def test_rule_times_sums_each_rules_jobs_and_spans_from_the_first_start():
    times = demo_suite.rule_times(LOG)
    assert times["generate"] == {"jobs": 2, "job_s": 5.0, "first": 0.0, "last": 3.0}
    assert times["pretrain"] == {"jobs": 1, "job_s": 60.0, "first": 4.0, "last": 64.0}
    assert "train" not in times  # started, never finished: not counted
    assert demo_suite.rule_times("no jobs here") == {}


def test_own_cpu_seconds_reads_this_process_and_none_for_a_missing_one():
    sum(i * i for i in range(200_000))  # some CPU time of our own
    assert demo_suite.own_cpu_seconds(os.getpid()) > 0
    assert demo_suite.own_cpu_seconds(2**22 + 12345) is None
