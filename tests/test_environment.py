"""The locked environments: the installed packages are those of requirements.lock (CUDA 13 torch)
or of requirements-cu12.lock (CUDA 12 torch), whichever matches the installed torch; the two locks
differ only in torch and its CUDA packages; and the conda env matches requirements.lock."""

import re
from importlib import metadata

import yaml

from conftest import ROOT

CUDA_PACKAGES = re.compile(r"^(torch|torchvision|triton|setuptools|cuda-|nvidia-)", re.I)


def _lock(name="requirements.lock"):
    lines = [l.strip() for l in (ROOT / name).read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def _pins(name):
    return dict(re.match(r"([^=\s]+)==([^\s;]+)", line).groups() for line in _lock(name))


def test_conda_env_pins_equal_the_lock():
    env = yaml.safe_load((ROOT / "workflow/envs/ordclip.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == _lock()


def test_cuda12_lock_differs_only_in_torch_and_cuda_packages():
    main, cu12 = _pins("requirements.lock"), _pins("requirements-cu12.lock")
    others = {k for k in {*main, *cu12} if not CUDA_PACKAGES.match(k)}
    assert {k: main.get(k) for k in others} == {k: cu12.get(k) for k in others}
    assert cu12["torch"] != main["torch"] and any(k.endswith("-cu12") for k in cu12)
    for name in ("requirements.lock", "requirements-cu12.lock"):
        assert re.search(r"^# CUDA: \d+\.\d+ build, NVIDIA driver [\d.]+ or newer", (ROOT / name).read_text(), re.M)


def test_installed_versions_are_the_locked_ones():
    lock = "requirements.lock"
    if metadata.version("torch") == _pins("requirements-cu12.lock")["torch"]:
        lock = "requirements-cu12.lock"
    wrong = []
    for name, version in _pins(lock).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} missing")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} != {version}")
    assert not wrong, (lock, wrong)
