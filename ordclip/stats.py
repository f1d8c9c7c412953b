"""Uncertainty of a cell and comparisons of methods: confidence intervals, paired tests, Holm's
correction, a paired bootstrap over test images, the split/seed variance decomposition and the
consistency of ours with a published mean ± std.

The unit of replication is a run (fold × seed): a new run of the pipeline draws a new split and a
new seed, so the interval of a cell's mean is a t-interval over its runs (our choice; a bootstrap
over the pooled test images would leave out the variance between splits, which is most of it on
small test sets). Distributions and tests are scipy's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95  # of every interval
ALPHA = 1 - LEVEL
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
BOOTSTRAP_BATCH = 100  # resamples scipy draws at a time: MORPH-size runs (5 × 11,000 images) in 1.6 s, not 16 s


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """(low, high) of the t confidence interval of the mean of ``values``: mean ± t_{n-1} · s/√n.
    None below two values; the mean itself when they are all equal."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return None
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def paired_t(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict | None:
    """Paired t-test of the differences a − b (runs paired by fold and seed): their mean, its
    t-interval and the two-sided p. None below two pairs. Differences equal up to float rounding
    give p = 0 when they are not zero, 1 when they are (scipy gives NaN or a warning there)."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return None
    mean = float(d.mean())
    low, high = t_interval(d, level)
    if np.ptp(d) <= 1e-12 * max(1.0, abs(mean)):  # equal up to float rounding (e.g. 2.1 − 1.1 vs 2.0 − 1.0)
        p = 1.0 if abs(mean) <= 1e-12 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"diff": mean, "ci_low": low, "ci_high": high, "p": p, "n": len(d)}


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p of Wilcoxon's signed-rank test of a − b (exact for small n); None below two
    pairs or where every difference is zero. With n runs its p cannot fall below 2 / 2**n
    (0.25 at n = 3, 0.0625 at n = 5): too few runs for it to reject at 5 %."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2 or not np.any(d):
        return None
    return float(stats.wilcoxon(d).pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error over the given tests; None: no test,
    left out of the family): the i-th smallest p becomes max over j ≤ i of (m − j + 1)·p_(j), at
    most 1. (scipy has no Holm: its false_discovery_control is Benjamini–Hochberg/Yekutieli.)"""
    tested = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    if not tested:
        return out
    p = np.array([pvalues[i] for i in tested], dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    for rank, j in enumerate(order):
        out[tested[j]] = float(adjusted[rank])
    return out


def paired_bootstrap(per_run_a: Sequence[np.ndarray], per_run_b: Sequence[np.ndarray],
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = LEVEL) -> dict | None:
    """Paired bootstrap over test images, the check for few runs: per run, the per-image scores of
    both methods on the same test images (e.g. absolute errors); each resample draws each run's
    images with replacement (runs are strata) and takes the mean over runs of the mean per-image
    difference a − b. Returns that difference, its percentile interval and the two-sided p
    (twice the smaller share of resampled differences on either side of zero)."""
    from scipy import stats

    if len(per_run_a) != len(per_run_b) or any(len(a) != len(b) for a, b in zip(per_run_a, per_run_b)):
        raise ValueError("paired_bootstrap: the two methods' runs have different numbers of test images")
    diffs = [np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) for a, b in zip(per_run_a, per_run_b)]
    if not diffs or any(len(d) == 0 for d in diffs):
        return None

    def statistic(*samples, axis=-1):
        return np.mean([np.mean(s, axis=axis) for s in samples], axis=0)

    res = stats.bootstrap(diffs, statistic, n_resamples=resamples, paired=False, vectorized=True,
                          confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
                          batch=BOOTSTRAP_BATCH)
    dist = res.bootstrap_distribution
    p = float(min(1.0, 2 * min(np.mean(dist <= 0), np.mean(dist >= 0))))
    return {"diff": float(statistic(*diffs)), "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "p": p}


def variance_shares(values: np.ndarray) -> dict | None:
    """How much of a cell's run-to-run variance comes from the split (fold) and how much from the
    seed: the balanced one-way random-effects estimates from a (folds × seeds) array of a metric,
    σ²_seed = mean over folds of the variance across seeds (MS_within) and
    σ²_fold = max(0, (MS_between − MS_within) / seeds), MS_between = seeds · var(fold means).
    None with one seed; with one fold, σ²_fold is None."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or not np.all(np.isfinite(x)):
        return None
    folds, seeds = x.shape
    within = float(x.var(axis=1, ddof=1).mean())
    if folds < 2:
        return {"var_fold": None, "var_seed": within, "fold_share": None}
    between = float(seeds * x.mean(axis=1).var(ddof=1))
    var_fold = max(0.0, (between - within) / seeds)
    total = var_fold + within
    return {"var_fold": var_fold, "var_seed": within, "fold_share": var_fold / total if total > 0 else None}


def consistent_with_published(ours: Sequence[float], mean: float, std: float | None = None,
                              n: int | None = None, level: float = LEVEL) -> dict:
    """Whether a published number is within reach of ours (``ours``: the cell's run values, in the
    published unit): with the paper's std and number of runs, Welch's two-sample t-test from the
    two means ± stds (scipy.stats.ttest_ind_from_stats); else whether the published mean lies in
    our t-interval. {"test", "p" (Welch only), "inside", "consistent"}."""
    from scipy import stats

    x = np.asarray(ours, dtype=np.float64)
    ci = t_interval(x, level)
    inside = None if ci is None else bool(ci[0] <= mean <= ci[1])
    if std is not None and n is not None and n >= 2 and len(x) >= 2:
        res = stats.ttest_ind_from_stats(float(x.mean()), float(x.std(ddof=1)), len(x), mean, std, n, equal_var=False)
        p = float(res.pvalue) if np.isfinite(res.pvalue) else (1.0 if float(x.mean()) == mean else 0.0)
        return {"test": "welch", "p": p, "inside": inside, "consistent": p >= 1 - level}
    return {"test": "interval", "p": None, "inside": inside, "consistent": inside}
