"""What one job of the pipeline depends on: its resolved configuration and the code it runs.

Every Snakemake rule passes ``job_config(params, verb, **keys)`` (as JSON) and ``code_hash(verb, job)``
to ``python -m ordclip <verb> --job JSON --code HASH``, and keeps both in its ``params``. So a job
is rerun exactly when the configuration it uses or the content of the code it runs changes, never
because of which params files supplied the values, their order, or file modification times.

The code of a verb is the set of ordclip modules its entry module imports, followed transitively
through every ``import ordclip...`` statement (also those inside functions), plus the modules the
job picks at run time (its method's or dataset kind's module) and the package data files it reads.
Any byte of those files counts, comments included.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ordclip.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent

# verb -> the module holding its implementation (the CLI only dispatches) and package data it reads
VERBS: dict[str, dict[str, tuple[str, ...]]] = {
    "generate": {"modules": ("ordclip.data.synthetic",), "data": ()},
    "fetch": {"modules": ("ordclip.data.fetch",), "data": ()},
    "prepare": {"modules": ("ordclip.data.prepare",), "data": ()},
    "split": {"modules": ("ordclip.data.splits",), "data": ()},
    "backbone": {"modules": ("ordclip.models.backbone",), "data": ("models/configs",)},
    "pretrain": {"modules": ("ordclip.pretrain",), "data": ("models/configs",)},
    "embed": {"modules": ("ordclip.embed",), "data": ("models/configs",)},
    "train": {"modules": ("ordclip.train",), "data": ("models/configs",)},
    "evaluate": {"modules": ("ordclip.evaluate",), "data": ()},
    "cell": {"modules": ("ordclip.tables", "ordclip.plots"), "data": ()},
    "table": {"modules": ("ordclip.tables",), "data": ("published.yaml",)},
}


# the keys of each verb's jobs: the wildcards of its Snakemake rule, the options of its CLI verb
KEYS = {
    "generate": ("dataset",), "fetch": ("dataset",), "prepare": ("dataset", "size"),
    "split": ("suite", "dataset", "fold"), "backbone": ("backbone",), "pretrain": ("backbone",),
    "embed": ("suite", "dataset"),
    "train": ("suite", "dataset", "method", "fold", "seed"), "evaluate": ("suite", "dataset", "method", "fold", "seed"),
    "cell": ("suite", "dataset", "method"), "table": ("suite", "name"),
}


def job_config(params: Mapping, verb: str, **keys: Any) -> dict:
    """The resolved configuration one job of ``verb`` uses, and nothing else.

    keys: generate/fetch ``dataset``; prepare ``dataset, size``; split ``suite, dataset, fold``;
    backbone/pretrain ``backbone``; embed ``suite, dataset``; train/evaluate ``suite, dataset, method, fold[, seed]`` (seed index, default 0);
    cell ``suite, dataset, method``; table ``suite, name``.
    """
    from ordclip import config as C

    if verb in ("generate", "fetch"):
        return {"dataset": C.dataset_config(params, keys["dataset"])}
    if verb == "prepare":
        ds = C.dataset_config(params, keys["dataset"])
        labels_csv, image_root = C.raw_source(params, keys["dataset"])
        job = {"dataset": ds["name"], "size": int(keys["size"]), "ranks": ds.get("ranks"),
               "labels_csv": labels_csv, "image_root": image_root, "duplicates": ds.get("duplicates", "error"),
               "interpolation": C.resize_interpolation(params, int(keys["size"]))}
        if ds["kind"] == "csv":  # the user's images are no Snakemake input: their content replans the job
            from ordclip import layout
            from ordclip.data.sources import source_digest

            cache = f"{layout.DATA}/prepared/{ds['name']}/.sources-cache.json"
            job["sources"] = source_digest(labels_csv, image_root, cache)
        return job
    if verb == "split":
        suite, dataset = keys["suite"], keys["dataset"]
        bb = C.backbone_config(params, C.suite_config(params, suite)["backbone"])
        return {"suite": suite, "dataset": dataset, "data": C.dataset_config(params, dataset)["data"],
                "resize": bb["resize"], "fold": int(keys["fold"]), "split": C.split_config(params, suite, dataset)}
    if verb in ("backbone", "pretrain"):
        return {"backbone": C.backbone_config(params, keys["backbone"])}
    if verb == "embed":
        s = C.suite_config(params, keys["suite"])
        return {"suite": keys["suite"], "seed": params["seed"], "device": s.get("device", "auto"),
                "backbone": C.backbone_config(params, s["backbone"]),
                "dataset": C.dataset_config(params, keys["dataset"])}
    if verb == "train":  # how often it checkpoints changes no result, so it stays outside "run"
        return {"run": C.run_config(params, keys["suite"], keys["dataset"], keys["method"], int(keys.get("seed") or 0)),
                "fold": int(keys["fold"]), "checkpoint_minutes": C.checkpoint_minutes(params, keys["suite"])}
    if verb == "evaluate":
        return {"run": C.run_config(params, keys["suite"], keys["dataset"], keys["method"], int(keys.get("seed") or 0)),
                "fold": int(keys["fold"])}
    if verb == "cell":
        runs = C.runs_of(params, keys["suite"], keys["dataset"])
        return {"run": C.run_config(params, keys["suite"], keys["dataset"], keys["method"]),
                "folds": sorted({k for k, _ in runs}),
                # (fold, seed index) of every run; left out with one seed (the cell's job as before seeds)
                **({"runs": [list(r) for r in runs]} if C.n_seeds(params, keys["suite"]) > 1 else {})}
    if verb == "table":
        spec = C.table_spec(params, keys["suite"], keys["name"])
        spaces = {}
        for d in spec["datasets"]:
            ds = C.dataset_config(params, d)
            if ds.get("rank_spaces") and ds.get("ranks"):
                spaces[d] = {m: C.apply_rank_space(ds, C.method_config(params, keys["suite"], m, d)["kind"])["ranks"]
                             for m in spec["methods"]}
        overall = C.suite_config(params, keys["suite"]).get("overall") or {}
        groups = {g: members for g, members in overall.items() if set(members) <= set(spec["datasets"])}
        # per dataset (an overall group: its first member's), the values of the dataset keys that published
        # rows' like.protocol name, and each method's report.mae mode (ordclip.tables.comparison, report_note)
        from ordclip.tables import protocol_keys

        keys_used = protocol_keys()
        first = {**{d: d for d in spec["datasets"]}, **{g: members[0] for g, members in groups.items()}}
        protocols = {d: {k: C.dataset_config(params, src).get(k) for k in keys_used} for d, src in first.items()}
        reports = {d: {m: C.method_config(params, keys["suite"], m, src)["report"]["mae"] for m in spec["methods"]}
                   for d, src in first.items()}
        return {"suite": keys["suite"], "name": keys["name"], **spec,
                "backbones": {s: C.suite_config(params, s)["backbone"] for s in spec["suites"]},
                "overall": overall, "rank_spaces": spaces, "protocols": protocols, "reports": reports}
    raise ConfigError(f"unknown verb {verb!r} (one of {sorted(VERBS)})")


def job_json(job: Mapping) -> str:
    """The canonical JSON text of a job's configuration (sorted keys, no spaces)."""
    return json.dumps(job, sort_keys=True, separators=(",", ":"), default=str)


# --- the code a job runs -------------------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    """The source file of ordclip module ``name`` (a package's __init__.py), or None."""
    parts = name.split(".")
    if parts[0] != "ordclip":
        return None
    if len(parts) == 1:
        return PACKAGE / "__init__.py"
    rel = Path(*parts[1:])
    for path in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(name: str, path: Path) -> set[str]:
    """The ordclip modules that module ``name`` (at ``path``) imports anywhere in its body, and the
    packages that contain them."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] != "ordclip":
                continue
            for i in range(1, len(parts) + 1):  # the module and every package above it run on import
                if _module_file(".".join(parts[:i])) is not None:
                    out.add(".".join(parts[:i]))
    return out


@lru_cache(maxsize=None)
def module_closure(roots: tuple[str, ...]) -> tuple[str, ...]:
    """Every ordclip module that importing ``roots`` may run, sorted."""
    seen: set[str] = set()
    todo = [r for root in roots for r in (".".join(root.split(".")[:i]) for i in range(1, root.count(".") + 2))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            raise ConfigError(f"module {name!r} is not part of the ordclip package ({PACKAGE})")
        seen.add(name)
        todo.extend(_imported(name, path) - seen)
    return tuple(sorted(seen))


def _runtime_modules(verb: str, job: Mapping) -> tuple[str, ...]:
    """Modules a job imports by name at run time: its method's, or its dataset kind's."""
    from ordclip.data.registry import DATASET_KINDS
    from ordclip.methods import METHODS

    if verb == "train":
        return (METHODS[job["run"]["method"]["kind"]]["module"],)
    if verb == "fetch":
        return (DATASET_KINDS[job["dataset"]["kind"]]["module"],)
    return ()


def code_files(verb: str, job: Mapping) -> list[Path]:
    """The source and data files of the ordclip package that a job of ``verb`` runs or reads."""
    return _verb_files(verb, _runtime_modules(verb, job))


def _verb_files(verb: str, runtime: tuple[str, ...]) -> list[Path]:
    if verb not in VERBS:
        raise ConfigError(f"unknown verb {verb!r} (one of {sorted(VERBS)})")
    modules = module_closure(tuple(sorted({*VERBS[verb]["modules"], *runtime})))
    files = [_module_file(m) for m in modules]
    for rel in VERBS[verb]["data"]:
        path = PACKAGE / rel
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def code_record(verb: str, job: Mapping) -> dict[str, str]:
    """{file path relative to the package's parent: sha256} of the code a job runs."""
    return {str(p.relative_to(PACKAGE.parent)): _file_sha256(p) for p in code_files(verb, job)}


def stamp_name(verb: str, job: Mapping) -> str:
    """The name of the code a job runs, as DVC records it (``lineage/code/<name>.json``): the verb,
    and the module it picks at run time (``train-coop``, ``fetch-morph2``)."""
    return "-".join([verb, *(m.rsplit(".", 1)[-1] for m in _runtime_modules(verb, job))])


def _stamp_parts(name: str) -> tuple[str, tuple[str, ...]]:
    from ordclip.data.registry import DATASET_KINDS
    from ordclip.methods import METHODS

    verb, _, tail = name.partition("-")
    if verb not in VERBS:
        raise ConfigError(f"code record {name!r}: {verb!r} is not a verb (one of {sorted(VERBS)})")
    if not tail:
        return verb, ()
    registry = METHODS if verb == "train" else DATASET_KINDS
    modules = sorted({e["module"] for e in registry.values() if e["module"].rsplit(".", 1)[-1] == tail})
    if verb not in ("train", "fetch") or not modules:
        raise ConfigError(f"code record {name!r}: no module {tail!r} for {verb}")
    return verb, tuple(modules)


def stamp_files(name: str) -> list[Path]:
    """The files of code record ``name`` (:func:`stamp_name`)."""
    return _verb_files(*_stamp_parts(name))


def stamp_record(name: str) -> dict[str, str]:
    """{file path relative to the package's parent: sha256} of code record ``name``."""
    return {str(p.relative_to(PACKAGE.parent)): _file_sha256(p) for p in stamp_files(name)}


def stamp_text(name: str) -> str:
    """The text of ``lineage/code/<name>.json``: :func:`stamp_record` as sorted JSON."""
    return json.dumps(stamp_record(name), indent=1, sort_keys=True) + "\n"


def param_keys(params: Mapping, verb: str, **keys: Any) -> list[str]:
    """The params keys (dotted paths) whose values a job of ``verb`` reads: DVC's ``params:`` of its
    stage. tests/test_jobs_params.py changes every other value of params.yaml and checks that the
    job's configuration (:func:`job_config`) stays the same."""
    from ordclip import config as C

    if verb in ("generate", "fetch"):
        return [f"datasets.{C.dataset_config(params, keys['dataset'])['data']}"]
    if verb == "prepare":  # and the interpolation of the backbones cached at its size
        at = [b for b, bb in params["backbones"].items() if bb.get("resize") == int(keys["size"])]
        return [f"datasets.{C.dataset_config(params, keys['dataset'])['data']}",
                *(f"backbones.{b}.{k}" for b in at for k in ("resize", "resize_interpolation"))]
    if verb in ("backbone", "pretrain"):
        return [f"backbones.{keys['backbone']}"]
    suite = keys["suite"]
    s = C.suite_config(params, suite)
    sk = f"suites.{suite}"
    bb = f"backbones.{s['backbone']}"
    if verb == "table":
        spec = C.table_spec(params, suite, keys["name"])
        own = {"table1": ["datasets", "methods"], "table2": ["fewshot"], "table3": ["ablations"]}
        out = [f"{sk}.{k}" for k in own.get(keys["name"], [f"tables.{keys['name']}"])]
        out += [f"{sk}.overall"] + [f"suites.{x}.backbone" for x in spec["suites"]]
        datasets = {C.dataset_config(params, d)["data"] for d in spec["datasets"]}
        out += [f"datasets.{d}" for d in sorted(datasets)] + [f"{sk}.dataset_overrides"]
        for m in spec["methods"]:  # the rank space of its kind, the prediction its MAE reports
            out += [f"methods.{m}.kind", f"methods.{m}.report", f"{sk}.overrides.{m}.report"]
        return out
    data = C.dataset_config(params, keys["dataset"])["data"]
    if verb == "split":
        return ["seed", f"datasets.{data}", f"{sk}.folds", f"{sk}.backbone", f"{bb}.resize"]
    if verb == "embed":
        return ["seed", f"datasets.{data}", f"{sk}.backbone", f"{sk}.device", bb]
    method = keys["method"]
    return ["seed", f"datasets.{data}", f"methods.{method}", bb, f"{sk}.backbone", f"{sk}.device",
            f"{sk}.precision", f"{sk}.folds", f"{sk}.seeds", f"{sk}.checkpoint_minutes", f"{sk}.overrides.{method}",
            f"{sk}.dataset_overrides.{data}.{method}"]


def code_hash(verb: str, job: Mapping) -> str:
    """sha256 over the names and contents of the code a job runs (:func:`code_record`)."""
    return hashlib.sha256(json.dumps(code_record(verb, job), sort_keys=True).encode()).hexdigest()
