"""Turn what a user names in `data.corpus` into a prepared corpus, preparing it if needed.

`synthetic` (the embedded default), a prepared folder, or a raw LC-Rec folder: the last two
let `python jobs/train_ttds.py --data.corpus=../shared/data/Instruments` just work.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ttds.data.corpus import Corpus
from ttds.data.prepare import prepare_corpus
from ttds.data.readers import read_corpus
from ttds.data.synthetic import SyntheticConfig, generate

log = logging.getLogger(__name__)

DATA_ROOT = Path("runs/data")


def open_or_prepare(spec: str, seed: int = 0, data_root: Path | str = DATA_ROOT) -> Corpus:
    data_root = Path(data_root)
    if spec == "synthetic":
        out = data_root / f"synthetic-{seed}"
        if not (out / "manifest.json").exists():
            log.info("generating the synthetic corpus into %s", out)
            prepare_corpus(generate(SyntheticConfig(seed=seed))[0], out)
        return Corpus.open(out)
    path = Path(spec)
    if (path / "manifest.json").exists():
        return Corpus.open(path)
    if path.is_dir() and list(path.glob("*.inter.json")):
        raw = read_corpus("lcrec", path)
        out = data_root / raw.name
        if not (out / "manifest.json").exists():
            log.info("preparing LC-Rec corpus %s into %s", path, out)
            prepare_corpus(raw, out)
        return Corpus.open(out)
    return Corpus.open(path)  # raises a DataError that says how to prepare one
