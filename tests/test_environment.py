"""The locked environment: requirements.lock is what is installed, and the conda env matches it."""

import re
from importlib import metadata

import yaml

from conftest import ROOT


def _lock():
    lines = [l.strip() for l in (ROOT / "requirements.lock").read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def test_conda_env_pins_equal_the_lock():
    env = yaml.safe_load((ROOT / "workflow/envs/ordclip.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == _lock()


def test_installed_versions_are_the_locked_ones():
    wrong = []
    for line in _lock():
        name, version = re.match(r"([^=\s]+)==([^\s;]+)", line).groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} missing")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} != {version}")
    assert not wrong, wrong
