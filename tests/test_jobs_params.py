"""The params keys each DVC stage declares (ordclip.jobs.param_keys) are all its job reads: every
other value of params.yaml is changed, one at a time, and the job's configuration must stay the same."""

import pytest

from conftest import ROOT
from ordclip.config import read_yaml
from ordclip.errors import OrdclipError
from ordclip.jobs import job_config, job_json, param_keys

JOBS = [
    ("generate", {"dataset": "counting"}),
    ("prepare", {"dataset": "fading", "size": 36}),
    ("fetch", {"dataset": "morph2"}),
    ("backbone", {"backbone": "tiny"}),
    ("pretrain", {"backbone": "tiny_pretrained"}),
    ("split", {"suite": "demo", "dataset": "counting-4shot", "fold": 0}),
    ("embed", {"suite": "demo", "dataset": "blur"}),
    ("train", {"suite": "demo", "dataset": "fading", "method": "numclip", "fold": 1}),
    ("train", {"suite": "demo_random", "dataset": "counting", "method": "coop", "fold": 0}),
    ("train", {"suite": "paper", "dataset": "morph2", "method": "ordinalclip", "fold": 0}),
    ("evaluate", {"suite": "demo", "dataset": "counting-top2keep20", "method": "baseline", "fold": 0}),
    ("cell", {"suite": "paper", "dataset": "hci", "method": "l2rclip"}),
    ("table", {"suite": "demo", "name": "table1"}),
    ("table", {"suite": "demo", "name": "backbones"}),
    ("table", {"suite": "paper", "name": "table1"}),
]


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    else:
        yield path


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1]] if value else [1]
    return 1


def _job(params, verb, keys):
    try:
        return job_json(job_config(params, verb, **keys))
    except (OrdclipError, KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # a value the job cannot be planned with: no job to compare


@pytest.mark.parametrize("verb,keys", JOBS, ids=[f"{v}-{'-'.join(map(str, k.values()))}" for v, k in JOBS])
def test_every_value_a_job_reads_is_a_declared_key(verb, keys, monkeypatch):
    import ordclip.tables

    names = ordclip.tables.protocol_keys()  # reads published.yaml, which no params value changes: once
    monkeypatch.setattr(ordclip.tables, "protocol_keys", lambda entries=None: names)
    params = read_yaml(ROOT / "params.yaml")
    base = _job(params, verb, keys)
    assert base is not None
    declared = [tuple(k.split(".")) for k in param_keys(params, verb, **keys)]
    inside = set()  # nodes under a declared key; YAML anchors (`<<: *x`) share them with other keys
    for d in declared:
        node = params
        for k in d:
            node = node.get(k) if isinstance(node, dict) else None
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, dict):
                inside.add(id(n))
                stack.extend(n.values())
    missed = []
    for path in _leaves(params):
        parent = params
        for k in path[:-1]:
            parent = parent[k]
        if any(path[:len(d)] == d for d in declared) or id(parent) in inside:
            continue  # a declared value, under this name or another
        old = parent[path[-1]]  # changed in place (with every key an anchor shares it with), then back
        parent[path[-1]] = _changed(old)
        try:
            now = _job(params, verb, keys)
        finally:
            parent[path[-1]] = old
        if now is not None and now != base:
            missed.append(".".join(map(str, path)))
    assert not missed, f"{verb} {keys} reads undeclared keys: {missed[:10]}"
