"""Baseline recommenders scored exactly like TTDS: popularity, SASRec, GRU4Rec.

`train_and_evaluate(name, corpus_dir, out_dir, overrides, train)` is the one entry point;
the neural models train with Ray Train + Ray Data (`seqmodel_worker.seq_worker`).
"""

from ttds.baselines.gru4rec import GRU4Rec
from ttds.baselines.popularity import evaluate_popularity, popularity_ranking
from ttds.baselines.runner import BASELINES, score_users, train_and_evaluate
from ttds.baselines.sasrec import SASRec
from ttds.config import GRU4RecConfig, SASRecConfig

__all__ = [
    "BASELINES",
    "GRU4Rec",
    "GRU4RecConfig",
    "SASRec",
    "SASRecConfig",
    "evaluate_popularity",
    "popularity_ranking",
    "score_users",
    "train_and_evaluate",
]
