"""A confirmatory folder's ledger: the small files that hold every decision and every test read.

Why: a confirmatory campaign (`ttds.bench.confirm`) runs for hours, often across working
sessions, and the machine it runs on can be lost between them, its disk with it. The trained
models are big and can be trained again; the decisions cannot be made again honestly: a recipe
frozen on validation, a (system, seed) already scored on test. `save` copies exactly those files
(kilobytes to a few megabytes: recipes, sweep tables, each unit's result record with its config
key, its per-user test figures, the test-read logs, the combined results) to a folder that is
kept (a git checkout, a mounted bucket); `restore` puts them back into a fresh `--out`, so the same
command goes on where the lost machine stopped: frozen recipes are used as they are, finished
units are neither trained nor read on test again, and an unfinished one starts over. The report
renders from the ledger alone (`jobs/report.py --runs <ledger> <ledger>/all-items`).

A unit is reused only when its config key matches (`ttds.bench.run_keys`), and the key holds the
corpus and output paths: restore into the same `--out` path, with the same `--data` path.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

__all__ = ["PATTERNS", "files", "restore", "save"]

# what a seed's benchmark run keeps (`ttds.bench.harness`): its records, per-user test figures and test reads
_SEED = ("results.json", "results.md", "details.json", "run.json", "test_reads.jsonl",
         "systems/*/result.json", "systems/*/key.json", "systems/*/test_per_user.parquet")
# what a confirmatory folder keeps, and all-items/ (the paper's protocol) again, beside its seeds
_COMBINED = ("results.json", "results.md", "run.json", "*.png")
_TUNING = ("recipes/*.yaml", "tune/*/frozen.json", "tune/*/summary.json", "tune/*/trials.md", "tune/*/trials.csv", "tune/*/sweep.yaml")
PATTERNS: tuple[str, ...] = _TUNING + tuple(
    f"{root}{p}" for root in ("", "all-items/") for p in (*_COMBINED, *(f"seeds/*/{s}" for s in _SEED)))


def files(folder: str | Path) -> list[Path]:
    """The ledger files present in `folder`, relative to it, sorted."""
    folder = Path(folder)
    return sorted({p.relative_to(folder) for pat in PATTERNS for p in folder.glob(pat) if p.is_file()})


def _copy(src_root: Path, dst_root: Path, rels: list[Path], overwrite: bool) -> list[Path]:
    done = []
    for rel in rels:
        src, dst = src_root / rel, dst_root / rel
        if dst.is_file() and (not overwrite or filecmp.cmp(src, dst, shallow=False)):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)  # a reader (or a stop) never sees half a file
        done.append(rel)
    return done


def save(folder: str | Path, ledger: str | Path) -> list[Path]:
    """Copy `folder`'s ledger files that are new or changed into `ledger`; the ones copied."""
    folder = Path(folder)
    return _copy(folder, Path(ledger), files(folder), overwrite=True)


def restore(ledger: str | Path, folder: str | Path) -> list[Path]:
    """Copy the ledger's files that `folder` lacks into it (a file already there is newer: kept); the ones copied."""
    ledger = Path(ledger)
    if not ledger.is_dir():
        return []
    return _copy(ledger, Path(folder), files(ledger), overwrite=False)
