"""Paired comparison of two systems on the same test users.

Why paired: the per-user NDCG of two recommenders is strongly correlated (easy users are easy
for both), so the standard error of the mean difference is far smaller than either system's
own; it is the honest way to say whether a +2% lead is a lead or noise. Reports the mean
difference, its standard error, z, a two-sided normal p-value and a percentile bootstrap 95%
interval (resampling users).

What `paired_comparison` does not cover: the spread between training runs (seed, data order).
It says whether two trained models differ on this population beyond the luck of which users
were sampled. A claim about a training recipe needs several runs of it: `recipe_comparison`
takes the runs of each recipe and resamples runs as well as users (a two-level bootstrap), so
its interval holds both sources of noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ttds.eval.per_user import read_per_user

__all__ = ["compare_folders", "paired_comparison", "paired_sentence", "recipe_comparison", "recipe_interval", "recipe_sentence"]


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, metric: str = "NDCG@10", n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare system `a` with system `b` on the users both were scored on (joined on user_id)."""
    for name, t in (("a", a), ("b", b)):
        if metric not in t.columns or "user_id" not in t.columns:
            raise ValueError(f"per-user table {name} has no user_id / {metric} column (has {list(t.columns)})")
    both = a[["user_id", metric]].merge(b[["user_id", metric]], on="user_id", suffixes=("_a", "_b"))
    n = len(both)
    if n < 2:
        raise ValueError(f"the two systems share {n} scored users; a paired comparison needs at least 2")
    d = both[f"{metric}_a"].to_numpy() - both[f"{metric}_b"].to_numpy()
    diff = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n))
    z = diff / se if se > 0 else (math.inf if diff > 0 else -math.inf if diff < 0 else 0.0)
    p = math.erfc(abs(z) / math.sqrt(2)) if math.isfinite(z) else 0.0
    rng = np.random.default_rng(seed)
    boot = np.array([d[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "metric": metric, "users": n, "a": float(both[f"{metric}_a"].mean()), "b": float(both[f"{metric}_b"].mean()),
        "diff": diff, "se": se, "z": z, "p_two_sided": p, "ci95": [float(lo), float(hi)],
        "a_better_users": int((d > 0).sum()), "b_better_users": int((d < 0).sum()),
    }


def paired_sentence(name_a: str, name_b: str, c: dict) -> str:
    """One plain sentence: who leads, by how much, and whether the lead is beyond noise."""
    lo, hi = c["ci95"]
    if lo > 0:
        verdict = f"{name_a} is ahead beyond noise"
    elif hi < 0:
        verdict = f"{name_b} is ahead beyond noise"
    else:
        verdict = "within noise: the 95% interval includes 0, so neither is shown better"
    return (f"paired over {c['users']} users, {c['metric']} {name_a} {c['a']:.4f} vs {name_b} {c['b']:.4f}: difference "
            f"{c['diff']:+.4f} (SE {c['se']:.4f}, z {c['z']:.2f}, p {c['p_two_sided']:.3f}, bootstrap 95% [{lo:+.4f}, {hi:+.4f}]); {verdict}.")


def _runs_matrix(runs: list[pd.DataFrame], metric: str, side: str) -> pd.DataFrame:
    """user_id -> one column per run (users every run scored)."""
    if not runs:
        raise ValueError(f"recipe {side} has no runs")
    out = None
    for i, t in enumerate(runs):
        if metric not in t.columns or "user_id" not in t.columns:
            raise ValueError(f"run {i} of recipe {side} has no user_id / {metric} column (has {list(t.columns)})")
        col = t[["user_id", metric]].rename(columns={metric: f"{side}{i}"})
        out = col if out is None else out.merge(col, on="user_id")
    return out


def recipe_comparison(runs_a: list[pd.DataFrame], runs_b: list[pd.DataFrame], metric: str = "NDCG@10",
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare two training recipes, each given as the per-user tables of its runs (seeds).

    The figure of a recipe is the mean over its runs of the mean over users. The 95% interval of
    the difference comes from a two-level bootstrap: each resample draws the runs of each recipe
    with replacement and the users with replacement (the same users for both sides, so the
    comparison stays paired). With one run on a side that side's training spread is not seen
    (`runs_resampled` False); with two or three the run part of the interval is rough, and it
    tightens as runs are added. `users_only` is the plain paired test on the run-averaged
    per-user figures, for contrast: the gap between the two intervals is what run spread adds.
    """
    ma = _runs_matrix(runs_a, metric, "a")
    mb = _runs_matrix(runs_b, metric, "b")
    both = ma.merge(mb, on="user_id")
    n = len(both)
    if n < 2:
        raise ValueError(f"the runs share {n} scored users; a comparison needs at least 2")
    a = both[[c for c in both.columns if c.startswith("a")]].to_numpy(dtype=np.float64)
    b = both[[c for c in both.columns if c.startswith("b")]].to_numpy(dtype=np.float64)
    ra, rb = a.shape[1], b.shape[1]
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        users = rng.integers(0, n, n)
        ca, cb = a[users].mean(0), b[users].mean(0)  # each run's mean over the resampled users
        boot[i] = ca[rng.integers(0, ra, ra)].mean() - cb[rng.integers(0, rb, rb)].mean()
    lo, hi = np.percentile(boot, [2.5, 97.5])
    run_a, run_b = a.mean(0), b.mean(0)
    avg = lambda m: pd.DataFrame({"user_id": both["user_id"].to_numpy(), metric: m.mean(1)})  # noqa: E731
    return {
        "metric": metric, "users": n, "runs_a": ra, "runs_b": rb,
        "a_run_means": [float(x) for x in run_a], "b_run_means": [float(x) for x in run_b],
        "a": float(run_a.mean()), "b": float(run_b.mean()),
        "a_run_sd": float(run_a.std(ddof=1)) if ra > 1 else None, "b_run_sd": float(run_b.std(ddof=1)) if rb > 1 else None,
        "diff": float(run_a.mean() - run_b.mean()), "ci95": [float(lo), float(hi)],
        "runs_resampled": ra > 1 and rb > 1,
        "users_only": paired_comparison(avg(a), avg(b), metric, n_boot, seed),
    }


def recipe_interval(runs: list[pd.DataFrame], metric: str = "NDCG@10", n_boot: int = 2000, seed: int = 0) -> dict:
    """One recipe's figure and its 95% interval over runs (seeds) and users: the same two-level
    bootstrap as `recipe_comparison` (users resampled, then runs), on the users every run scored.
    With one run the interval holds only the users' noise (`runs_resampled` False)."""
    m = _runs_matrix(runs, metric, "a")
    x = m[[c for c in m.columns if c != "user_id"]].to_numpy(dtype=np.float64)
    n, r = x.shape
    if n < 2:
        raise ValueError(f"the runs share {n} scored users; an interval needs at least 2")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        per_run = x[rng.integers(0, n, n)].mean(0)
        boot[i] = per_run[rng.integers(0, r, r)].mean()
    lo, hi = np.percentile(boot, [2.5, 97.5])
    run_means = x.mean(0)
    return {"metric": metric, "users": n, "runs": r, "mean": float(run_means.mean()), "run_means": [float(v) for v in run_means],
            "run_sd": float(run_means.std(ddof=1)) if r > 1 else None, "ci95": [float(lo), float(hi)], "runs_resampled": r > 1}


def recipe_sentence(name_a: str, name_b: str, c: dict) -> str:
    """What `recipe_comparison` found, plainly, including what its interval could not see."""
    lo, hi = c["ci95"]
    sd = lambda v: f", run SD {v:.4f}" if v is not None else ""  # noqa: E731
    if lo > 0:
        verdict = f"{name_a} is ahead beyond run and user noise"
    elif hi < 0:
        verdict = f"{name_b} is ahead beyond run and user noise"
    else:
        verdict = "within noise: the 95% interval includes 0, so neither recipe is shown better"
    if not c["runs_resampled"]:
        verdict += " (one run on a side: its training spread is not in the interval; add runs)"
    u = c["users_only"]["ci95"]
    runs = lambda k: f"{k} run" + ("s" if k != 1 else "")  # noqa: E731
    return (f"{c['metric']} over {c['users']} users: {name_a} {c['a']:.4f} ({runs(c['runs_a'])}{sd(c['a_run_sd'])}) vs "
            f"{name_b} {c['b']:.4f} ({runs(c['runs_b'])}{sd(c['b_run_sd'])}): difference {c['diff']:+.4f}, "
            f"95% over runs and users [{lo:+.4f}, {hi:+.4f}] (users only [{u[0]:+.4f}, {u[1]:+.4f}]); {verdict}.")


def compare_folders(a: list[str | Path], b: list[str | Path], metric: str = "NDCG@10", n_boot: int = 2000,
                    names: tuple[str, str] = ("A", "B")) -> tuple[dict, str]:
    """Compare runs made apart from their per-user files (a folder holding test_per_user.parquet, or the file):
    one run a side is the paired test over users; several (seeds of a recipe) the comparison over runs and users."""
    runs_a, runs_b = [read_per_user(x) for x in a], [read_per_user(x) for x in b]
    if len(runs_a) == len(runs_b) == 1:
        c = paired_comparison(runs_a[0], runs_b[0], metric, n_boot)
        return c, paired_sentence(*names, c)
    c = recipe_comparison(runs_a, runs_b, metric, n_boot)
    return c, recipe_sentence(*names, c)
