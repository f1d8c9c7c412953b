"""Parameters: load and merge params files, validate them, resolve one run's configuration.

Snakemake and the CLI both call these functions, so a job sees exactly the configuration
that Snakemake planned it with.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ordclip.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"

# libyaml's parser (about 7x faster than PyYAML's pure-Python one) where PyYAML was built with it;
# both build the same Python objects from the same document.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """Parse YAML text with the fast safe loader (errors are yaml.YAMLError, as yaml.safe_load's)."""
    return yaml.load(text, Loader=FAST_LOADER)


@functools.lru_cache(maxsize=None)
def _schema() -> dict:
    """workflow/schemas/params.schema.yaml, parsed once per process (treat it as read-only)."""
    return load_yaml(SCHEMA_PATH.read_text())


@functools.lru_cache(maxsize=None)
def _validator(ref: str | None = None):
    """A jsonschema validator for the whole params schema, or (``ref``) one of its $defs; built once."""
    import jsonschema

    schema = _schema()
    if ref is not None:
        schema = {"$ref": f"#/$defs/{ref}", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def deep_merge(base: Mapping, update: Mapping) -> dict:
    """Merge ``update`` into a copy of ``base``; nested dicts merge, other values replace
    (the rule Snakemake applies to --configfile and --config)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(items: Iterable[str]) -> dict:
    """Parse ``KEY=VALUE`` overrides (values read as YAML), as Snakemake's ``--config`` does."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def read_yaml(path: str | Path) -> Any:
    """A params file's content; a missing file, bytes that are not UTF-8 or a YAML syntax error
    fail with a ConfigError naming the file and the line (and column) at fault."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: not UTF-8 "
                          f"(byte {data[exc.start]:#04x}); save the file as UTF-8") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        fast_error = exc
    try:  # the error again from the pure-Python parser, whose messages name the context of the error
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        context, started = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and started is not None:
            context += f" (from line {started.line + 1}, column {started.column + 1})"
        what = "; ".join(str(p) for p in (context, getattr(exc, "problem", None)) if p)
        raise ConfigError(f"{where}: not valid YAML: {what or exc}") from None
    raise ConfigError(f"{path}: not valid YAML for libyaml, though PyYAML's own parser reads it: {fast_error}")


def check_yaml_files(paths: Iterable[str | Path]) -> None:
    """Read each params file as YAML (see read_yaml): for the Snakefile, before Snakemake's own
    loader, whose error names neither the file nor the line."""
    for path in paths:
        if Path(path).exists():
            read_yaml(path)


def check_configfiles(paths: Iterable[str | Path], workdir: str | Path = ".") -> None:
    """Refuse a ``snakemake --configfile`` value that is no params file: a file that is not
    .yaml/.yml/.json, or one none of whose top-level keys is a section of params.yaml; under
    results/, data/ or logs/ (where the pipeline writes), also one with any key that is not a section
    (a cell's or run's JSON carries ``suite`` or ``seed`` beside its own keys); a params file kept
    there is accepted. Such a value is almost always a target written after ``--configfile`` (which
    takes several values), and the error says to put it first."""
    sections = sorted(_schema()["properties"])
    workdir = Path(workdir).resolve()
    for path in map(Path, paths):
        reasons = []
        resolved = path.resolve()
        top = resolved.relative_to(workdir).parts[0] if resolved.is_relative_to(workdir) else None
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            reasons.append("it is not a .yaml, .yml or .json file")
        try:
            keys = list(load_yaml(path.read_text(encoding="utf-8")) or {})
        except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError):
            keys = []
        unknown = [str(k) for k in keys if k not in sections]
        if not set(keys) & set(sections):
            shown = ", ".join(map(str, keys[:6])) + (" ..." if len(keys) > 6 else "")
            reasons.append(f"none of its keys ({shown or 'none'}) is a section of params.yaml ({', '.join(sections)})")
        elif unknown and top in ("results", "data", "logs"):
            shown = ", ".join(unknown[:6]) + (" ..." if len(unknown) > 6 else "")
            many = len(unknown) > 1
            reasons.append(f"its key{'s' if many else ''} {shown} {'are' if many else 'is'} no section"
                           f"{'s' if many else ''} of params.yaml ({', '.join(sections)})")
        if reasons and top in ("results", "data", "logs"):
            reasons.insert(0, f"it is a file the pipeline writes (under {top}/)")
        if reasons:
            shown_path = resolved.relative_to(workdir) if top is not None else path
            raise ConfigError(f"--configfile {shown_path}: not a params file: {'; '.join(reasons)}. A target written after "
                              f"--configfile is read as one more config file: put the target before --configfile "
                              f"(snakemake --cores all TARGET --configfile FILE)")


def load_params(paths: Iterable[str | Path], overrides: Mapping | None = None) -> dict:
    """Read and merge the params files in order, apply ``overrides``, validate the result."""
    params: dict = {}
    for path in paths:
        path = Path(path)
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        params = deep_merge(params, data)
    params = deep_merge(params, overrides or {})
    validate_schema(params)
    check(params)
    return params


def _key_path(parts: Iterable) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def validate_schema(params: Mapping) -> None:
    """Validate against workflow/schemas/params.schema.yaml, naming the key path at fault."""
    errors = sorted(_validator().iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{_key_path(e.absolute_path)}: {e.message}" for e in errors[:10]]
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(lines))


def check(params: Mapping) -> None:
    """Cross-reference checks the schema cannot express (names that must exist, lengths)."""
    problems: list[str] = []
    for name, ds in params.get("datasets", {}).items():
        ranks, names = ds.get("ranks"), ds.get("rank_names")
        if ranks is not None and ranks[1] <= ranks[0]:
            problems.append(f"datasets.{name}.ranks: max {ranks[1]} must exceed min {ranks[0]}")
        elif ranks is not None and names is not None and len(names) != ranks[1] - ranks[0] + 1:
            problems.append(
                f"datasets.{name}.rank_names: {len(names)} names for "
                f"{ranks[1] - ranks[0] + 1} ranks ({ranks[0]}..{ranks[1]})"
            )
        coarse = ds.get("coarse") or {}
        starts = coarse.get("starts")
        if starts is not None:
            if any(b <= a for a, b in zip(starts, starts[1:])):
                problems.append(f"datasets.{name}.coarse.starts: {starts} must be strictly increasing")
            elif ranks is not None and (starts[0] > ranks[0] or starts[-1] > ranks[1]):
                problems.append(f"datasets.{name}.coarse.starts: {starts} must start at or below the lowest "
                                f"rank {ranks[0]} and end at or below the top rank {ranks[1]}")
            if len(coarse.get("names", [])) != len(starts):
                problems.append(f"datasets.{name}.coarse.names: {len(coarse.get('names', []))} names for "
                                f"{len(starts)} bins")
        for kind, space in (ds.get("rank_spaces") or {}).items():
            where = f"datasets.{name}.rank_spaces.{kind}"
            lo, hi = space["ranks"]
            if ranks is None:
                problems.append(f"{where}: a rank space needs the dataset's own datasets.{name}.ranks")
            elif not lo <= ranks[0] <= ranks[1] <= hi:
                problems.append(f"{where}.ranks: {space['ranks']} must contain the dataset's ranks {ranks}")
            elif space.get("rank_names") and len(space["rank_names"]) != hi - lo + 1:
                problems.append(f"{where}.rank_names: {len(space['rank_names'])} names for {hi - lo + 1} ranks")
            elif lo < ranks[0] and (not starts or starts[0] > lo):
                problems.append(f"{where}.ranks: a space below the dataset's lowest rank {ranks[0]} needs "
                                f"datasets.{name}.coarse.starts from {lo} or below (NumCLIP's bins, which are "
                                f"otherwise drawn from the labels)")
        split = ds.get("split", {})
        fractions = [split.get(k, 0) for k in ("train", "val", "test")]
        if split.get("protocol") == "stratified" and sum(fractions) > 1 + 1e-9:
            problems.append(f"datasets.{name}.split: train+val+test = {sum(fractions):g} > 1")
    for sname, suite in params.get("suites", {}).items():
        where = f"suites.{sname}"
        if suite.get("backbone") not in params.get("backbones", {}):
            problems.append(f"{where}.backbone: unknown backbone {suite.get('backbone')!r}")
        for i, d in enumerate(suite.get("datasets", [])):
            if d not in params.get("datasets", {}):
                problems.append(f"{where}.datasets[{i}]: unknown dataset {d!r}")
        for i, m in enumerate(suite.get("methods", [])):
            if m not in params.get("methods", {}):
                problems.append(f"{where}.methods[{i}]: unknown method {m!r}")
        for group, members in (suite.get("overall") or {}).items():
            if group in params.get("datasets", {}):
                problems.append(f"{where}.overall.{group}: the name of a dataset too; pick another")
            for i, d in enumerate(members):
                if d not in suite_members(suite, "datasets"):
                    problems.append(f"{where}.overall.{group}[{i}]: {d!r} is in no table of {where}")
        specs = [(table, suite.get(table)) for table in ("ablations", "fewshot")]
        specs += [(f"tables.{t}", spec) for t, spec in (suite.get("tables") or {}).items()]
        for table, spec in specs:
            for key in ("datasets", "methods"):
                for i, name in enumerate((spec or {}).get(key, [])):
                    if name not in params.get(key, {}):
                        problems.append(f"{where}.{table}.{key}[{i}]: unknown {key[:-1]} {name!r}")
            for i, other in enumerate((spec or {}).get("suites") or []):
                if other not in params.get("suites", {}):
                    problems.append(f"{where}.{table}.suites[{i}]: unknown suite {other!r}")
        overrides = [(f"{where}.overrides", suite.get("overrides") or {}),
                     (f"{where}.fewshot_overrides", suite.get("fewshot_overrides") or {})]
        for d, per_method in (suite.get("dataset_overrides") or {}).items():
            if d not in params.get("datasets", {}):
                problems.append(f"{where}.dataset_overrides.{d}: unknown dataset {d!r}")
            overrides.append((f"{where}.dataset_overrides.{d}", per_method or {}))
        for at, per_method in overrides:
            for m, over in per_method.items():
                if m not in params.get("methods", {}):
                    problems.append(f"{at}.{m}: unknown method {m!r}")
                else:
                    problems += _unknown_keys(params["methods"][m], over, f"{at}.{m}")
                    merged = deep_merge(deep_merge(params["methods"][m], (suite.get("overrides") or {}).get(m, {})),
                                        over)
                    problems += [f"{at}.{m} (merged over methods.{m}){p}" for p in _method_errors(merged)]
    for name, method in params.get("methods", {}).items():
        problems += [f"methods.{name}{p}" for p in untrained_head_errors(method)]
    by_size: dict[int, dict[str, list[str]]] = {}
    for name, bb in params.get("backbones", {}).items():
        by_size.setdefault(bb.get("resize"), {}).setdefault(bb.get("resize_interpolation"), []).append(name)
    for size, kinds in by_size.items():
        if len(kinds) > 1:
            which = "; ".join(f"{kind} ({', '.join(names)})" for kind, names in kinds.items())
            problems.append(f"backbones: {which} all cache "
                            f"images at resize {size}, with different resize_interpolation: the image cache "
                            f"(data/prepared/<dataset>/{size}px) is one per size; give them the same one")
    for name, bb in params.get("backbones", {}).items():
        if bb.get("resize", 0) < bb.get("image_size", 0):
            problems.append(f"backbones.{name}.resize: {bb['resize']} is below image_size {bb['image_size']} "
                            f"(images are cached at resize px, then cropped to image_size)")
    if "data" in params.get("suites", {}):
        problems.append("suites.data: 'data' names the steps shared by every suite (logs/data, lineage/data); "
                        "rename the suite")
    suite = params.get("suite")
    if suite not in params.get("suites", {}):
        problems.append(f"suite: unknown suite {suite!r} (defined: {sorted(params.get('suites', {}))})")
    if problems:
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(problems))


def known_label_counts(params: Mapping, name: str) -> dict[int, int] | None:
    """Images per label of a dataset where they are known before any job runs: a synthetic set's
    ``per_rank`` of each rank, the labels of a user's CSV or of a fetched set's data/raw labels.csv
    once it exists; else None. Rows whose label is not an integer are left out here (the prepare
    job names them)."""
    import csv as csv_module
    from collections import Counter

    ds = dataset_config(params, name)
    if ds["kind"] == "synthetic":
        return {label: ds["per_rank"] for label in range(ds["ranks"][0], ds["ranks"][1] + 1)}
    labels_csv = Path(raw_source(params, name)[0])
    if not labels_csv.is_file():
        return None
    with open(labels_csv, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv_module.DictReader(f)
        column = next((c for c in reader.fieldnames or [] if c.strip() == "label"), None)
        if column is None:
            return None
        labels = [(row.get(column) or "").strip() for row in reader]
    return dict(Counter(int(v) for v in labels if v.lstrip("-").isdigit()))


def _ranges(folds: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0..2, 5``."""
    out, start = [], folds[0]
    for prev, cur in zip(folds, [*folds[1:], None]):
        if cur != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}..{prev}")
            start = cur
    return ", ".join(out)


def check_sources(params: Mapping) -> None:
    """Refuse, when the workflow is planned, a bring-your-own (kind csv) dataset of a suite whose
    labels CSV or image root does not exist, naming the key, the path and the suites that use it
    (Snakemake would report a MissingInputException for the CSV, or every row's image as missing)."""
    users: dict[str, list[str]] = {}
    for sname, suite in params.get("suites", {}).items():
        for d in suite_members(suite, "datasets", sname, params):
            users.setdefault(dataset_config(params, d)["data"], []).append(sname)
    problems = []
    for d, suites in users.items():
        ds = dataset_config(params, d)
        if ds["kind"] != "csv":
            continue
        used = f"used by suite{'s' if len(set(suites)) > 1 else ''} {', '.join(dict.fromkeys(suites))}"
        if not Path(ds["image_root"]).is_dir():
            problems.append(f"datasets.{d}.image_root: {ds['image_root']} is not a folder ({used}); it is the folder "
                            f"of your images, which the paths in {ds['csv']} are relative to: set it to where they are")
        if not Path(ds["csv"]).is_file():
            problems.append(f"datasets.{d}.csv: {ds['csv']} not found ({used}); it is your labels file, a CSV with "
                            f"the header path,label: set it to where it is")
    if problems:
        raise ConfigError("missing files of your own datasets:\n  " + "\n  ".join(problems))


def check_folds(params: Mapping) -> None:
    """Refuse, when the workflow is planned, a suite whose split protocol cannot give a dataset's
    folds a train, val and test part with the images it has (known_label_counts), naming the suite,
    dataset, folds, the ranks with fewest images and the key to change; the split jobs would
    otherwise fail one by one."""
    from ordclip.data.splits import fold_problems

    problems, counts_of = [], functools.lru_cache(maxsize=None)(lambda d: known_label_counts(params, d))
    for sname, suite in params.get("suites", {}).items():
        bases = dict.fromkeys(dataset_config(params, d)["data"] for d in suite_members(suite, "datasets", sname, params))
        for d in bases:
            cfg = split_config(params, sname, d)
            counts = None if cfg["protocol"] == "given" else counts_of(d)
            if not counts:
                continue
            bad = fold_problems(counts, cfg)
            if not bad:
                continue
            reasons = {}
            for fold, why in bad.items():
                reasons.setdefault(why, []).append(fold)
            fewest = min(counts.values())
            labels = sorted(label for label, n in counts.items() if n == fewest)
            key = (f"datasets.{d}.split.folds" if "folds" in dataset_config(params, d)["split"]
                   else f"suites.{sname}.folds")
            fit = next((k for k in range(cfg["folds"] - 1, 1, -1) if not fold_problems(counts, {**cfg, "folds": k})),
                       None) if cfg["protocol"] == "kfold" else None
            advice = (f"at most {fit} folds fit: set {key} to {fit}" if fit is not None
                      else f"change datasets.{d}.split or add images")
            problems.append(
                f"suites.{sname}, dataset {d!r}: split protocol {cfg['protocol']!r} with {cfg['folds']} folds: "
                + "; ".join(f"fold{'s' if len(f) > 1 else ''} {_ranges(f)}: {why}" for why, f in reasons.items())
                + f"; the dataset has {sum(counts.values())} images in {len(counts)} ranks, the fewest {fewest} "
                f"(label{'s' if len(labels) > 1 else ''} {', '.join(map(str, labels[:5]))}"
                f"{' ...' if len(labels) > 5 else ''}), the most {max(counts.values())}; {advice}")
    if problems:
        raise ConfigError("folds the data cannot fill:\n  " + "\n  ".join(problems))


def untrained_head_errors(method: Mapping) -> list[str]:
    """NumCLIP: reporting or selecting on the regressor's ``value`` while its L1 weight is 0 would
    report a head that never trained. Key paths relative to the method."""
    if method.get("kind") != "numclip" or (method.get("loss_weights") or {}).get("l1", 1) != 0:
        return []
    keys = [("select_on", str(method.get("select_on", "")).rpartition("_")[2]),
            *((f"report.{k}", m) for k, m in (method.get("report") or {}).items())]
    return [f".{key}: 'value' is the regressor's estimate, never trained with loss_weights.l1 = 0; use the "
            f"bin-based prediction (bins, or exp/max where the bins are the ranks)" for key, mode in keys
            if mode == "value"]


def _method_errors(method: Mapping) -> list[str]:
    """Schema errors of one method's parameters (e.g. after a suite's overrides are merged in)."""
    errors = [f"{''.join(f'.{p}' for p in e.absolute_path)}: {e.message}"
              for e in sorted(_validator("method").iter_errors(dict(method)), key=lambda e: list(e.absolute_path))][:5]
    return errors or untrained_head_errors(method)


def _unknown_keys(base: Mapping, over: Mapping, where: str) -> list[str]:
    out = []
    for key, value in over.items():
        if key not in base:
            out.append(f"{where}.{key}: not a parameter of this method")
        # a scheduler of another kind brings its own keys (multistep: milestones, gamma); the schema
        # checks the merged method (_method_errors)
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping) and key != "scheduler":
            out += _unknown_keys(base[key], value, f"{where}.{key}")
    return out


TABLE_TITLES = {"table1": "Table 1: methods × datasets", "table2": "Table 2: few-shot (k training images per rank)",
                "table3": "Table 3: ablations"}
TABLE_METRICS = ["mae", "acc"]  # a table's columns per dataset unless its spec lists `metrics`


def variant_datasets(spec: Mapping) -> list[str]:
    """The datasets of a table spec with its variants expanded: each dataset at each number of
    ``shots`` (``<d>-<k>shot``), or at each ``shift`` setting (``<d>-top<c>keep<p>``), else as is."""
    if spec.get("shots"):
        return [fewshot_name(d, k) for d in spec["datasets"] for k in spec["shots"]]
    if spec.get("shift"):
        sh = spec["shift"]
        return [shift_name(d, c, p) for d in spec["datasets"] for c in sh["top_classes"] for p in sh["keep_percent"]]
    return list(spec["datasets"])


def fewshot_datasets(suite: Mapping) -> list[str]:
    """The few-shot variants of table 2: each few-shot dataset at each number of shots."""
    return variant_datasets(suite["fewshot"]) if suite.get("fewshot") else []


def _own_specs(suite: Mapping) -> list[Mapping]:
    """The suite's table specs whose cells are the suite's own (table2, table3, and every
    ``tables`` entry that does not take its cells from other suites or lists this one)."""
    specs = [spec for spec in (suite.get("fewshot"), suite.get("ablations")) if spec]
    return specs + [spec for spec in (suite.get("tables") or {}).values() if not spec.get("suites")]


def suite_members(suite: Mapping, key: str, name: str | None = None, params: Mapping | None = None) -> list[str]:
    """The suite's datasets or methods: those of table 1, then those only in its other tables
    (ablations, few-shot, ``tables``), then those of tables of other suites (``params``) that take
    cells from this one (``name``), e.g. a backbone study."""
    specs = list(_own_specs(suite))
    for other in ((params or {}).get("suites") or {}).values():
        specs += [spec for spec in (other.get("tables") or {}).values() if name in (spec.get("suites") or [])]
    extra = [x for spec in specs for x in (variant_datasets(spec) if key == "datasets" else spec[key])]
    return list(dict.fromkeys([*suite.get(key, []), *extra]))


def table_spec(params: Mapping, suite: str, name: str) -> dict:
    """What a table of a suite shows: {title, datasets (variants expanded), methods, suites (whose
    cells it reads: this suite, or a backbone study's), metrics}. table1: the suite's datasets ×
    methods; table2: its ``fewshot``; table3: its ``ablations``; any other: ``tables.<name>``."""
    s = suite_config(params, suite)
    if name == "table1":
        spec = {"datasets": s["datasets"], "methods": s["methods"]}
    elif name in ("table2", "table3"):
        key = "fewshot" if name == "table2" else "ablations"
        if not s.get(key):
            raise ConfigError(f"suites.{suite}.{key}: not set, so this suite has no {name}")
        spec = s[key]
    elif name in (s.get("tables") or {}):
        spec = s["tables"][name]
    else:
        raise ConfigError(f"suites.{suite}: no table {name!r} (table1, table2, table3 or one of suites.{suite}.tables: "
                          f"{sorted(s.get('tables') or {})})")
    return {"title": spec.get("title", TABLE_TITLES.get(name, name)), "datasets": variant_datasets(spec),
            "methods": list(spec["methods"]), "suites": list(spec.get("suites") or [suite]),
            "metrics": list(spec.get("metrics") or TABLE_METRICS)}


def table_grid(params: dict, suite: str, name: str) -> tuple[list[str], list[str]]:
    """(datasets, methods) of a table (see :func:`table_spec`)."""
    spec = table_spec(params, suite, name)
    return spec["datasets"], spec["methods"]


def suite_config(params: Mapping, suite: str) -> dict:
    """The suite's own entry (datasets, methods, folds, backbone, device)."""
    try:
        return dict(params["suites"][suite])
    except KeyError:
        raise ConfigError(f"suites.{suite}: unknown suite (defined: {sorted(params['suites'])})") from None


def backbone_config(params: Mapping, name: str) -> dict:
    return {"name": name, **params["backbones"][name]}


def resize_interpolation(params: Mapping, size: int) -> str:
    """The interpolation of the image cache at ``size`` px: that of the backbones cached at this size
    (``backbones.<name>.resize_interpolation``; check() refuses two that differ), bilinear (the official
    torchvision Resize) where no backbone has it."""
    kinds = {bb["resize_interpolation"] for bb in params.get("backbones", {}).values() if bb.get("resize") == size}
    return kinds.pop() if len(kinds) == 1 else "bilinear"


# Defaults of a bring-your-own (kind: csv) dataset, all "our choice": a neutral prompt, the
# demo's stratified split. Rank names default to the label values (ordclip.runs.make_task) and
# NumCLIP's bins to 5 quantile bins (ordclip.runs.coarse_bins).
CSV_DEFAULTS = {
    "prompt": {"context": "the level shown in this image is"},
    "split": {"protocol": "stratified", "train": 0.6, "val": 0.15, "test": 0.25},
}


FEWSHOT = re.compile(r"^(?P<base>[A-Za-z0-9][A-Za-z0-9_]*)-(?P<shots>[1-9][0-9]*)shot$")
SHIFT = re.compile(r"^(?P<base>[A-Za-z0-9][A-Za-z0-9_]*)-top(?P<top>[1-9][0-9]*)keep(?P<keep>[1-9][0-9]?)$")


def fewshot_name(dataset: str, shots: int) -> str:
    """The few-shot variant of a dataset: its images, its folds' train parts cut to ``shots`` per rank."""
    return f"{dataset}-{shots}shot"


def shift_name(dataset: str, top_classes: int, keep_percent: int) -> str:
    """The label-distribution-shift variant of a dataset: its images, its folds' train parts keeping
    ``keep_percent`` % of the images of their ``top_classes`` most frequent ranks."""
    return f"{dataset}-top{top_classes}keep{keep_percent}"


def dataset_config(params: Mapping, name: str) -> dict:
    """A dataset's entry, with the defaults of its kind filled in. ``data`` names the dataset whose
    images it uses: itself, or the base of a variant: few-shot ``<base>-<k>shot`` (``shots`` is k) or
    label-distribution shift ``<base>-top<c>keep<p>`` (``shift`` is {top_classes: c, keep_percent: p})."""
    extra: dict = {"data": name}
    fewshot, shift = FEWSHOT.match(name), SHIFT.match(name)
    if name not in params.get("datasets", {}) and fewshot:
        name_, extra = fewshot["base"], {"data": fewshot["base"], "shots": int(fewshot["shots"])}
    elif name not in params.get("datasets", {}) and shift:
        name_, extra = shift["base"], {"data": shift["base"],
                                       "shift": {"top_classes": int(shift["top"]), "keep_percent": int(shift["keep"])}}
    else:
        name_ = name
    try:
        ds = params["datasets"][name_]
    except KeyError:
        raise ConfigError(f"datasets.{name_}: unknown dataset") from None
    defaults = CSV_DEFAULTS if ds.get("kind") == "csv" else {}
    return {"name": name, **deep_merge(defaults, ds), **extra}


def raw_source(params: Mapping, name: str) -> tuple[str, str]:
    """(labels CSV, image root) of a dataset: the user's own files for kind csv, else data/raw/<name>."""
    from ordclip import layout

    ds = dataset_config(params, name)
    if ds["kind"] == "csv":
        return ds["csv"], ds["image_root"]
    return layout.raw_labels(name), layout.raw_dir(name)


def apply_rank_space(ds: Mapping, kind: str) -> dict:
    """The dataset as a method of ``kind`` sees it: its own ranks, or the rank space
    ``rank_spaces.<kind>`` (e.g. OrdinalCLIP's 101 ranks, ages 0..100, on MORPH II) with its rank
    words. ``rank_offset`` = dataset's lowest rank label − the space's: the prepared ranks (label −
    the dataset's lowest) plus it are the ranks of the space. ``dataset_ranks``: the dataset's own
    [lowest, highest] labels, the part of the space the ordinality of the prototypes counts
    (ordclip.evaluate)."""
    space = (ds.get("rank_spaces") or {}).get(kind)
    if not space:
        return dict(ds)
    out = {k: v for k, v in ds.items() if k != "rank_names"}
    out["ranks"] = list(space["ranks"])
    if space.get("rank_names"):
        out["rank_names"] = list(space["rank_names"])
    out["rank_offset"] = ds["ranks"][0] - space["ranks"][0]
    out["dataset_ranks"] = list(ds["ranks"])
    return out


def method_config(params: Mapping, suite: str, name: str, dataset: str | None = None) -> dict:
    """The method's parameters with the suite's overrides merged in, then the suite's overrides
    for this dataset (``dataset_overrides.<dataset>.<method>``; a few-shot variant takes its base's),
    then, on a few-shot variant, the suite's ``fewshot_overrides.<method>`` (the few-shot recipe)."""
    try:
        base = params["methods"][name]
    except KeyError:
        raise ConfigError(f"methods.{name}: unknown method") from None
    s = suite_config(params, suite)
    out = deep_merge(base, (s.get("overrides") or {}).get(name, {}))
    if dataset is not None:
        ds = dataset_config(params, dataset)
        out = deep_merge(out, ((s.get("dataset_overrides") or {}).get(ds["data"]) or {}).get(name, {}))
        if "shots" in ds:
            out = deep_merge(out, (s.get("fewshot_overrides") or {}).get(name, {}))
    return {"name": name, **out}


def run_config(params: Mapping, suite: str, dataset: str, method: str, seed: int = 0) -> dict:
    """Everything one (suite, dataset, method) run of seed index ``seed`` depends on, and nothing else.

    Seed index j > 0 (suites.<suite>.seeds) trains with ``seed + j`` (torch's initialisation, the
    batch order, augmentation) and a linear head drawn from ``head_seed + j``; the split is the
    fold's, whatever the seed. j = 0 gives the configuration (and hash) of a suite with one seed."""
    s = suite_config(params, suite)
    if not 0 <= seed < n_seeds(params, suite):
        raise ConfigError(f"suites.{suite}.seeds: seed index {seed} is not below {n_seeds(params, suite)}")
    if dataset not in suite_members(s, "datasets", suite, params):
        raise ConfigError(f"suites.{suite}.datasets: {dataset!r} is not in this suite")
    if method not in suite_members(s, "methods", suite, params):
        raise ConfigError(f"suites.{suite}.methods: {method!r} is not in this suite")
    mcfg = method_config(params, suite, method, dataset)
    if seed and "head_seed" in mcfg:
        mcfg["head_seed"] += seed
    return {
        "suite": suite,
        "seed": params["seed"] + seed,
        **({"seed_index": seed} if seed else {}),
        "device": s.get("device", "auto"),
        "precision": s.get("precision", "auto"),
        # only when on: a run without it keeps the configuration (and hash) it had before the option
        **({"compile": True} if s.get("compile") else {}),
        "backbone": backbone_config(params, s["backbone"]),
        "dataset": apply_rank_space(dataset_config(params, dataset), params["methods"][method]["kind"]),
        "method": mcfg,
    }


CHECKPOINT_MINUTES = 5.0  # default of suites.<name>.checkpoint_minutes


def checkpoint_minutes(params: Mapping, suite: str) -> float:
    """Minutes between two resume checkpoints of a training run (at epoch ends; 0: every epoch)."""
    return float(suite_config(params, suite).get("checkpoint_minutes", CHECKPOINT_MINUTES))


def n_folds(params: Mapping, suite: str, dataset: str) -> int:
    """Folds of a dataset in a suite: its protocol's own count (``split.folds``) or the suite's."""
    return dataset_config(params, dataset)["split"].get("folds", suite_config(params, suite)["folds"])


def n_seeds(params: Mapping, suite: str) -> int:
    """Runs per (dataset, method, fold) of a suite, each with its own seed (``suites.<s>.seeds``)."""
    return int(suite_config(params, suite).get("seeds", 1))


def runs_of(params: Mapping, suite: str, dataset: str) -> list[tuple[int, int]]:
    """The (fold, seed index) of every run of a cell, fold by fold."""
    return [(k, j) for k in range(n_folds(params, suite, dataset)) for j in range(n_seeds(params, suite))]


def split_config(params: Mapping, suite: str, dataset: str) -> dict:
    """The protocol of a dataset's folds in a suite, with the run seed and, for a variant, its
    number of shots per rank or its label-distribution shift."""
    ds = dataset_config(params, dataset)
    out = {"seed": params["seed"], **ds["split"], "folds": n_folds(params, suite, dataset)}
    for key in ("shots", "shift"):
        if key in ds:
            out[key] = ds[key]
    return out


def config_hash(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
